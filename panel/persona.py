"""The persona page: read and write prompts/<name>.md, and try what the bot would answer with it."""

import logging
import re
from pathlib import Path

from flask import Blueprint, jsonify

import ai_service
import budget
import knowledge
import memory
import stats
from panel.auth import login_required
from panel.common import deps, json_body, render

log = logging.getLogger(__name__)

bp = Blueprint("persona", __name__)

PROMPT_NAME = re.compile(r"\+?[A-Za-z0-9_-]{1,64}")  # "+5511…": a Twilio number's prompt
BAD_NAME = "Nome inválido: use só letras, números, - e _ (até 64)."
MAX_PROMPT_CHARS = 100_000  # the editor's limit, for saving and trying alike


def prompt_path(name):
    settings = deps().settings
    if name == "system":
        return Path(settings.system_prompt_file)
    return Path(settings.system_prompt_file).parent / f"{name}.md"


def prompt_names():
    """`system`, every instance seen, and every prompts/<name>.md there is."""
    redis = deps().redis
    names = {m.get("instance") for m in memory.chats(redis) if m.get("instance")}
    names |= {name.decode() for name in redis.hkeys(stats.INSTANCES)}
    folder = prompt_path("system").parent
    if folder.is_dir():
        names |= {p.stem for p in folder.glob("*.md")}
    names.discard(prompt_path("system").stem)
    names -= {"system", "knowledge"}  # prompts/knowledge.md is the shop's knowledge (knowledge.py), not a persona
    return ["system", *sorted(n for n in names if PROMPT_NAME.fullmatch(n))]


@bp.get("/persona")
@login_required
def persona_page():
    return render("persona.html", names=prompt_names(), page="persona")


@bp.get("/api/prompts/<name>")
@login_required
def api_prompt(name):
    if not PROMPT_NAME.fullmatch(name):
        return jsonify(error=BAD_NAME), 400
    path = prompt_path(name)
    exists = path.is_file()
    return jsonify(name=name, text=path.read_text(encoding="utf-8") if exists else "", exists=exists,
                   overridden=name == "system" and bool(deps().settings.system_prompt.strip()))


@bp.put("/api/prompts/<name>")
@login_required
def api_save_prompt(name):
    """Write prompts/<name>.md; the next reply reads it (no restart). An empty instance prompt is removed."""
    if not PROMPT_NAME.fullmatch(name):
        return jsonify(error=BAD_NAME), 400
    body = json_body()
    text = body.get("text") if body else None
    if not isinstance(text, str) or len(text) > MAX_PROMPT_CHARS:
        return jsonify(error=f"Escreva o texto da persona (até {MAX_PROMPT_CHARS} caracteres) e salve de novo."), 400
    path = prompt_path(name)
    if not text.strip():
        if name == "system":
            return jsonify(error="O texto system não pode ficar vazio: ele vale para todos os números."), 400
        path.unlink(missing_ok=True)
        return jsonify(name=name, exists=False)
    try:
        knowledge.write_file(path, text.strip() + "\n")  # a reply reading it meanwhile sees the old or the new text
    except OSError as error:  # e.g. prompts/ not writable by the container's user (README "Panel")
        log.error("panel: cannot save prompt %s: %s", name, error)
        return jsonify(error=f"Não foi possível salvar {path.name}: a pasta prompts/ não aceita gravação "
                             f"({error.strerror or error}). Veja a seção Painel do guia."), 500
    log.info("panel: prompt %s saved (%d chars)", name, len(text))
    return jsonify(name=name, exists=True)


@bp.post("/api/try")
@login_required
def api_try():
    """What the bot would answer, as chat.py does (no history, split parts), sending nothing to WhatsApp.

    `prompt` and `knowledge`, when sent, stand for the persona and the knowledge files (a draft being tried).
    """
    import worker  # split_reply: the same split as real replies

    settings = deps().settings
    body = json_body()
    text = body.get("text") if body else None
    instance = body.get("instance") or "" if body else ""
    if not isinstance(text, str) or not text.strip() or not isinstance(instance, str):
        return jsonify(error="Escreva a mensagem do cliente para testar."), 400
    if instance and not PROMPT_NAME.fullmatch(instance):
        return jsonify(error=BAD_NAME), 400
    prompt, known = body.get("prompt"), body.get("knowledge")  # drafts from the page, unsaved
    if isinstance(prompt, str) and len(prompt) > MAX_PROMPT_CHARS:
        return jsonify(error=f"A persona de teste passa de {MAX_PROMPT_CHARS} caracteres; encurte-a."), 400
    if isinstance(known, str) and len(known) > knowledge.MAX_CHARS:
        return jsonify(error=f"O conhecimento de teste passa de {knowledge.MAX_CHARS} caracteres; encurte-o."), 400
    prompt = prompt if isinstance(prompt, str) and prompt.strip() else None
    known = known if isinstance(known, str) else None
    if not budget.allow(deps().redis, settings):  # a try is a Gemini call like any other
        return jsonify(error=f"Limite de GEMINI_MAX_CALLS_PER_HOUR={settings.gemini_max_calls_per_hour} chamadas "
                             "ao Gemini nesta hora atingido; tente de novo na próxima hora."), 429
    system = knowledge.system_instruction(settings, instance, persona=prompt, knowledge=known)
    try:
        answer = ai_service.generate_reply(deps().gemini(), settings, [], text[: settings.max_input_chars], system)
    except ai_service.Handoff as handoff:  # Gemini would hand this chat to a person
        return jsonify(parts=[settings.handoff_message], handoff=handoff.reason)
    except ai_service.ReplyError as error:
        return jsonify(error=f"O Gemini não respondeu ({error.reason}). Tente de novo em instantes."), 502
    return jsonify(parts=worker.split_reply(answer, settings))
