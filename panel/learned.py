""""O bot aprendeu" and /panel/api/suggestions: answers learned from people's handoffs, for the owner to approve or reject."""

import logging

from flask import Blueprint, jsonify

import chat_ids
import learn
from panel.auth import login_required
from panel.common import deps, json_body, render

log = logging.getLogger(__name__)

bp = Blueprint("learned", __name__)


def shown(item):
    """A suggestion as the page and the API show it: its chat by the keyed id (chat_ids.py), never the Redis ref."""
    return {**item, "chat_id": chat_ids.public(chat_ids.key(deps().settings), item["chat_id"])}


@bp.get("/aprendeu")
@login_required
def learned_page():
    return render("learned.html", suggestions=[shown(s) for s in learn.suggestions(deps().redis)],
                  page="learned")


@bp.get("/api/suggestions")
@login_required
def api_suggestions():
    return jsonify([shown(s) for s in learn.suggestions(deps().redis)])


@bp.post("/api/suggestions/<sid>/approve")
@login_required
def api_approve(sid):
    """Append the question and answer (optionally `{"answer": "..."}` edited) to the number's knowledge."""
    body = json_body() or {}
    answer = body.get("answer")
    if answer is not None and (not isinstance(answer, str) or not answer.strip() or len(answer) > 1000):
        return jsonify(error='"answer" must be a non-empty text of at most 1000 characters'), 400
    try:
        item = learn.approve(deps().redis, deps().settings, sid, answer)
    except OSError as error:
        return jsonify(error=f"cannot write the knowledge: {error.strerror or error}"), 500
    if item is None:
        return jsonify(error="no such suggestion"), 404
    from panel.shop_knowledge import prepare_caches  # the knowledge changed: its cache too

    prepare_caches(item["knowledge"])
    return jsonify(result="approved", **shown(item))


@bp.post("/api/suggestions/<sid>/reject")
@login_required
def api_reject(sid):
    item = learn.reject(deps().redis, sid)
    if item is None:
        return jsonify(error="no such suggestion"), 404
    return jsonify(result="rejected", **shown(item))
