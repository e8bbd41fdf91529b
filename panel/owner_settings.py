"""The Configurações page and `GET|PUT /panel/api/settings`: what the owner changes without SSH or a restart.

The values live in Redis over `.env`'s (shop_settings.py), checked by config.py's validators; a
wrong one is a 400 whose pt-BR `error` names it and gives an example, and nothing is stored.
"""

import re

from flask import Blueprint, jsonify

import shop_settings
from config import SettingsError
from panel.auth import login_required
from panel.common import deps, json_body, render

bp = Blueprint("owner_settings", __name__)


def current():
    return shop_settings.effective(deps().redis, deps().settings)


@bp.get("/settings")
@login_required
def settings_page():
    return render("settings.html", page="settings", values=shop_settings.shown(current()))


@bp.get("/api/settings")
@login_required
def api_settings():
    return jsonify(shop_settings.shown(current()))


@bp.put("/api/settings")
@login_required
def api_save_settings():
    """Any of shop_settings.FIELDS as JSON; null puts back .env's value. Answers the whole effective set."""
    body = json_body()
    if body is None:
        return jsonify(error='envie um objeto JSON, por exemplo {"bot_paused": true}'), 400
    try:
        settings = shop_settings.save(deps().redis, deps().settings, body)
    except SettingsError as error:
        named = re.match(r"[A-Z_]+", str(error))
        field = named.group(0).lower() if named else None
        return jsonify(error=str(error), field=field if field in shop_settings.FIELDS else None), 400
    return jsonify(shop_settings.shown(settings))
