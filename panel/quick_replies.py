"""/panel/api/quick-replies: the shop's ready answers, typed as "/" and a shortcut in the reply box."""

import json
import re

from flask import Blueprint, jsonify, request

from panel.auth import login_required
from panel.common import deps

bp = Blueprint("quick_replies", __name__, url_prefix="/api/quick-replies")

KEY = "wa:panel:quick_replies"  # JSON list of {"shortcut", "text"}
SHORTCUT = re.compile(r"[a-z0-9_-]{1,30}")
MAX_ITEMS = 100
MAX_TEXT = 4096


def load(redis):
    raw = redis.get(KEY)
    return json.loads(raw) if raw else []


def check(items):
    """The list as stored, or the Portuguese reason it cannot be."""
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        return None, f"Envie uma lista de até {MAX_ITEMS} respostas rápidas."
    clean, seen = [], set()
    for n, item in enumerate(items, 1):
        shortcut = item.get("shortcut") if isinstance(item, dict) else None
        text = item.get("text") if isinstance(item, dict) else None
        if not isinstance(shortcut, str) or not SHORTCUT.fullmatch(shortcut.strip().lstrip("/").lower()):
            return None, f"Resposta {n}: o atalho deve ter de 1 a 30 letras minúsculas, números, - ou _ (ex.: pix)."
        shortcut = shortcut.strip().lstrip("/").lower()
        if shortcut in seen:
            return None, f"O atalho /{shortcut} aparece duas vezes: use um nome diferente para cada resposta."
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            return None, f"Resposta /{shortcut}: escreva um texto de até {MAX_TEXT} caracteres."
        seen.add(shortcut)
        clean.append({"shortcut": shortcut, "text": text.strip()})
    return clean, None


@bp.get("")
@login_required
def api_list():
    return jsonify(load(deps().redis))


@bp.put("")
@login_required
def api_save():
    items, error = check(request.get_json(silent=True))  # a JSON list; anything else (or malformed JSON) is 400
    if error:
        return jsonify(error=error), 400
    deps().redis.set(KEY, json.dumps(items, ensure_ascii=False))
    return jsonify(items)
