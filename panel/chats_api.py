"""/panel/api/chats: list and read chats, and what a person does to one (take over, hand back, stop, answer, erase)."""

import logging

from flask import Blueprint, jsonify, request

import channels
import chats
import events
import stats
from panel.auth import login_required
from panel.common import chat_list, chat_meta, deps, json_body, one_chat, resolve

log = logging.getLogger(__name__)

bp = Blueprint("chats_api", __name__, url_prefix="/api/chats")

MAX_REPLY_CHARS = 4096


@bp.get("")
@login_required
def api_chats():
    return jsonify(chat_list())


@bp.get("/<pid>")
@login_required
def api_chat(pid):
    chat = one_chat(pid, reveal=request.args.get("reveal") in ("1", "true"))
    return jsonify(chat) if chat else (jsonify(error="no such chat"), 404)


def act(cid, action):
    if chat_meta(cid) is None:
        return jsonify(error="no such chat"), 404
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
        return jsonify(error="no such chat"), 404
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


@bp.post("/<pid>/reply")
@login_required
def api_reply(pid):
    cid = resolve(pid)
    """Answer as a person: pause the bot first, send through the chat's own instance and channel, log it as "human"."""
    settings, redis = deps().settings, deps().redis
    body = json_body()
    text = body.get("text") if body else None
    if not isinstance(text, str) or not text.strip():
        return jsonify(error='send JSON {"text": "..."} with a non-empty text'), 400
    if len(text) > MAX_REPLY_CHARS:
        return jsonify(error=f"text longer than {MAX_REPLY_CHARS} characters"), 400
    meta = chat_meta(cid)
    if not meta or not meta.get("reply_to"):
        return jsonify(error="no such chat"), 404
    take_over(cid)
    try:
        message_id, _ = chats.answer_as_person(redis, deps().evolution(), settings, cid, meta, text.strip())
    except channels.Error as error:
        log.warning("panel: reply to chat %s failed: %s", cid, error)
        return jsonify(error=str(error)), 502
    events.record(redis, settings, "person.replied", cid, meta.get("instance", ""), meta.get("channel", "evolution"),
                  meta["reply_to"], text.strip())
    log.info("panel: a person answered chat %s", cid)  # never a chat id beside a (masked) number
    return jsonify(result="sent", id=message_id, **chats.state(redis, cid))
