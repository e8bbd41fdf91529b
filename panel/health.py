"""The health page and /panel/api/stats: each number's connection, the queue, and the daily counters."""

from flask import Blueprint, jsonify

import events
import stats
from panel.auth import login_required
from panel.common import deps, render

bp = Blueprint("health", __name__)


@bp.get("/health")
@login_required
def health_page():
    return render("health.html", days=stats.daily(deps().redis), health=stats.health(deps().redis, deps().queue_name()),
                  dead_events=events.dead(deps().redis), page="health")


@bp.get("/api/stats")
@login_required
def api_stats():
    return jsonify(days=stats.daily(deps().redis), health=stats.health(deps().redis, deps().queue_name()))
