"""The knowledge page and /panel/api/knowledge: what the shop knows, read and written as prompts/*knowledge.md."""

import logging

from flask import Blueprint, jsonify, request

import gemini_cache
import knowledge
from panel.auth import login_required
from panel.common import deps, json_body, render
from panel.persona import PROMPT_NAME, prompt_names

log = logging.getLogger(__name__)

bp = Blueprint("knowledge", __name__)


def described(name):
    """The knowledge `name` as the API shows it, with whether it goes to Gemini as a context cache."""
    settings = deps().settings
    text = knowledge.read(settings, name)
    instruction = knowledge.system_instruction(settings, "" if name == knowledge.SHARED else name)
    return {"name": name, "text": text, "exists": knowledge.path(settings, name).is_file(), "chars": len(text),
            "cached": gemini_cache.worth_caching(settings, instruction)}


@bp.get("/conhecimento")
@login_required
def knowledge_page():
    return render("knowledge.html", names=prompt_names(), page="knowledge")


@bp.get("/api/knowledge")
@login_required
def api_knowledge():
    name = request.args.get("name") or knowledge.SHARED
    if not PROMPT_NAME.fullmatch(name):
        return jsonify(error="knowledge names are letters, digits, - and _ (as the prompts)"), 400
    return jsonify(described(name))


@bp.put("/api/knowledge")
@login_required
def api_save_knowledge():
    """Write the knowledge; the next reply reads it (no restart), and its context cache is made meanwhile."""
    body = json_body()
    name = (body or {}).get("name") or knowledge.SHARED
    text = (body or {}).get("text")
    if not isinstance(name, str) or not PROMPT_NAME.fullmatch(name):
        return jsonify(error='send JSON {"name": "system", "text": "..."}; names are letters, digits, - and _'), 400
    if not isinstance(text, str) or len(text) > knowledge.MAX_CHARS:
        return jsonify(error=f'send JSON {{"name": "...", "text": "..."}} (at most {knowledge.MAX_CHARS} characters)'), 400
    try:
        knowledge.write(deps().settings, name, text)
    except OSError as error:  # e.g. prompts/ not writable by the container's user
        log.error("panel: cannot save knowledge %s: %s", name, error)
        return jsonify(error=f"cannot write {knowledge.path(deps().settings, name).name}: {error.strerror or error}"), 500
    prepare_caches(name)
    return jsonify(described(name))


def prepare_caches(name):
    """Make the context cache of each number that reads this knowledge now, beside the request, so the
    next reply finds it ready (gemini_cache.py; a number's first reply would otherwise go inline)."""
    settings = deps().settings
    numbers = [name] if name != knowledge.SHARED else [
        "", *(n for n in prompt_names() if n != "system" and knowledge.name_for(settings, n) == knowledge.SHARED)]
    for number in numbers:
        gemini_cache.prepare(deps().redis, deps().gemini(), settings, knowledge.system_instruction(settings, number),
                             number)
