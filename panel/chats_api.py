"""/panel/api/chats: find and read chats, and what a person does to one (take over, hand back, stop, answer, erase).

Every error here is Portuguese and says what to do: the page shows it as it is.
"""

import logging
import time

from flask import Blueprint, jsonify, request

import ai_service
import attention
import budget
import channels
import chats
import learn
import events
import memory
import stats
from panel import search
from panel.auth import login_required
from panel.common import chat_list, chat_meta, conditional, deps, json_body, note_uncertain, one_chat, resolve

log = logging.getLogger(__name__)

bp = Blueprint("chats_api", __name__, url_prefix="/api/chats")

MAX_REPLY_CHARS = 4096
NO_CHAT = "Conversa não encontrada: ela pode ter sido apagada. Volte à lista de conversas."
UNCERTAIN = "O WhatsApp não respondeu a tempo: a mensagem pode ter saído — confira no celular antes de reenviar."


@bp.get("")
@login_required
def api_chats():
    """?q=&state=&cursor=&limit=: {"chats", "total", "next", "needs_person"}; 304 when the page has not changed."""
    try:
        query = search.parse(request.args)
    except search.BadQuery as error:
        return jsonify(error=str(error)), 400
    return conditional(jsonify(chat_list(*query)))


@bp.get("/<pid>")
@login_required
def api_chat(pid):
    chat = one_chat(pid, reveal=request.args.get("reveal") in ("1", "true"))
    return conditional(jsonify(chat)) if chat else (jsonify(error=NO_CHAT), 404)


def act(cid, action):
    if chat_meta(cid) is None:
        return jsonify(error=NO_CHAT), 404
    result = action()
    log.info("panel: chat %s: %s", cid, result)
    return jsonify(result=result, **chats.state(deps().redis, cid))


@bp.post("/<pid>/pause")
@login_required
def api_pause(pid):
    cid = resolve(pid)
    return act(cid, lambda: take_over(cid))


@bp.post("/<pid>/resume")
@login_required
def api_resume(pid):
    cid = resolve(pid)
    return act(cid, lambda: chats.hand_back(deps().redis, cid, deps().settings))


@bp.post("/<pid>/stop")
@login_required
def api_stop(pid):
    cid = resolve(pid)
    return act(cid, lambda: chats.stop(deps().redis, cid, deps().settings))


@bp.post("/<pid>/forget")
@login_required
def api_forget(pid):
    cid = resolve(pid)
    if chat_meta(cid) is None:
        return jsonify(error=NO_CHAT), 404
    erased = chats.forget(deps().redis, cid)
    deps().refs.pop(pid, None)
    log.info("panel: chat %s erased (%d keys)", cid, erased)
    return jsonify(result="forgotten", erased=erased)


def take_over(cid):
    """Pause the bot; a handoff is counted only when the bot was answering this chat until now."""
    redis = deps().redis
    before = chats.state(redis, cid)["state"]
    result = chats.take_over(redis, cid, deps().settings)
    if before not in ("paused", "stopped"):
        pipe = redis.pipeline(transaction=False)
        stats.count(pipe, "handoffs")
        pipe.execute()
    return result


def send_failure(error):
    """(what the owner reads, whether the message may have gone out) for a failed send."""
    if error.status is None and "Connect" not in str(error):  # sent, then no answer: WhatsApp may have it
        return UNCERTAIN, True
    if error.retryable:
        return ("Não foi enviada: o WhatsApp não está respondendo agora. Veja em Saúde se o número está "
                "conectado e tente de novo em instantes."), False
    return (f"Não foi enviada: o WhatsApp recusou a mensagem (erro {error.status}). Confira se o número do "
            "cliente ainda usa WhatsApp e se a conexão está ativa em Saúde."), False


@bp.post("/<pid>/reply")
@login_required
def api_reply(pid):
    """Answer as a person: pause the bot first, send through the chat's own instance and channel, log it as "human"."""
    cid = resolve(pid)
    settings, redis = deps().settings, deps().redis
    body = json_body()
    text = body.get("text") if body else None
    if not isinstance(text, str) or not text.strip():
        return jsonify(error="Escreva a mensagem antes de enviar."), 400
    if len(text) > MAX_REPLY_CHARS:
        return jsonify(error=f"Mensagem longa demais: divida em partes de até {MAX_REPLY_CHARS} caracteres."), 400
    meta = chat_meta(cid)
    if not meta or not meta.get("reply_to"):
        return jsonify(error=NO_CHAT), 404
    take_over(cid)
    now = time.time()
    try:
        message_id, _ = chats.answer_as_person(redis, deps().evolution(), settings, cid, meta, text.strip())
    except channels.Error as error:
        log.warning("panel: reply to chat %s failed: %s", cid, error)
        shown, uncertain = send_failure(error)
        if uncertain:
            note_uncertain(redis, cid, text.strip(), now)
        return jsonify(error=shown, uncertain=uncertain), 504 if uncertain else 502
    attention.clear(redis, cid)
    learn.person_answered(redis, deps().queue, cid, text, settings)  # after a handoff, the bot may learn from it
    events.record(redis, settings, "person.replied", cid, meta.get("instance", ""), meta.get("channel", "evolution"),
                  meta["reply_to"], text.strip())
    log.info("panel: a person answered chat %s", cid)  # never a chat id beside a (masked) number
    return jsonify(result="sent", id=message_id, **chats.state(redis, cid))


SUGGEST_ASK = ("[Pedido interno do painel, não é do cliente] Escreva a próxima mensagem da loja para este cliente, "
               "continuando a conversa acima, no tom da loja. Responda só com o texto da mensagem.")


@bp.post("/<pid>/suggest")
@login_required
def api_suggest(pid):
    """Gemini drafts the shop's next message from the chat's history and persona; nothing is sent.

    Counted in GEMINI_MAX_CALLS_PER_HOUR like a reply.
    """
    settings, redis, cid = deps().settings, deps().redis, resolve(pid)
    meta = chat_meta(cid)
    if meta is None:
        return jsonify(error=NO_CHAT), 404
    if not budget.allow(redis, settings):
        return jsonify(error="O limite de chamadas ao Gemini desta hora foi atingido (GEMINI_MAX_CALLS_PER_HOUR). "
                             "Escreva a resposta você mesmo ou tente na próxima hora."), 429
    history = memory.load_history(redis, cid)
    try:
        text = ai_service.generate_reply(deps().gemini(), settings, history, SUGGEST_ASK,
                                         ai_service.load_system_prompt(settings, meta.get("instance", "")))
    except ai_service.Handoff as handoff:
        return jsonify(error=f"O Gemini acha que esta conversa pede uma pessoa ({handoff.reason}). "
                             "Escreva você a resposta."), 409
    except ai_service.ReplyError as error:
        log.warning("panel: suggestion for chat %s failed: %s", cid, error.reason)
        return jsonify(error="O Gemini não respondeu agora. Tente de novo em instantes ou escreva a resposta."), 502
    return jsonify(text=text.strip())
