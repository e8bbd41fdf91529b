"""Outgoing events the receiver never took (events.py's dead-letter list): listed, and sent again on request."""

import logging

from flask import Blueprint, jsonify, redirect, url_for

import events
from panel.auth import login_required
from panel.common import deps

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__)


@bp.get("/api/events/dead")
@login_required
def api_dead():
    return jsonify(events.dead(deps().redis))


@bp.post("/api/events/<event_id>/resend")
@login_required
def api_resend(event_id):
    if not events.resend(deps().redis, event_id):
        return jsonify(error="no such dead event"), 404
    log.info("panel: event %s sent again", event_id)
    return jsonify(result="queued")


@bp.post("/events/<event_id>/resend")
@login_required
def resend_form(event_id):
    """The health page's "reenviar" button (a plain form): back to the page, where the event has left the list."""
    if events.resend(deps().redis, event_id):
        log.info("panel: event %s sent again", event_id)
    return redirect(url_for("panel.health.health_page"), 303)
