"""What every panel module shares: the bot's connections (`deps()`), how a chat is shown, page rendering."""

import re
import time
from dataclasses import dataclass, field

from flask import current_app, render_template, request

import ai_service
import chat_ids
import chatlog
import chats
import sender
from parser import mask

CHAT_ID = re.compile(r"[0-9a-f]{20}")
KIND_LABELS = {"image": "imagem", "audio": "áudio", "video": "vídeo", "document": "documento", "sticker": "figurinha",
               "location": "localização", "contact": "contato", "poll": "enquete", "followup": "lembrete"}


@dataclass
class Deps:
    """The panel's resources, one set per app: settings, Redis, the RQ queue, and clients made on first use."""

    settings: object
    redis: object
    queue: object
    genai: object = None
    http: object = None
    refs: dict = field(default_factory=dict)  # keyed id -> Redis ref, filled from the chat index on a miss

    def gemini(self):
        if self.genai is None:
            self.genai = ai_service.make_client(self.settings)
        return self.genai

    def evolution(self):
        if self.http is None:
            self.http = sender.make_session()
        return self.http

    def queue_name(self):
        return self.queue.name if self.queue is not None else "whatsapp"


def deps():
    """The current app's panel resources (like the tutorial's `get_db`)."""
    return current_app.extensions["panel"]


def json_body():
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


def render(template, **context):
    from panel.auth import csrf_token  # every page's forms and scripts carry the session's token

    return render_template(f"panel/{template}", csrf_token=csrf_token(), kinds=KIND_LABELS, now=time.time(),
                           **context)


def summary(meta, now, reveal=False):
    """One chat as the API and the pages show it."""
    number = meta.get("reply_to", "")
    item = {
        "id": chat_ids.public(chat_ids.key(deps().settings), meta["id"]),  # never the plain ref: it is reversible
        "instance": meta.get("instance", ""), "name": meta.get("name", ""),
        "number_masked": mask(number),
        "last_text": meta.get("last_text", ""), "last_at": int(float(meta.get("last_at") or 0)),
        "last_from": meta.get("last_from", ""),
    }
    item.update(chats.state(deps().redis, meta["id"], now))
    if reveal:
        item["number"] = number
    return item


def chat_list():
    now = time.time()
    return [summary(meta, now) for meta in chatlog.chats(deps().redis)]


def resolve(pid):
    """The Redis ref of the chat the panel's URLs call `pid` (its keyed id, chat_ids.py), or None."""
    if not chat_ids.PUBLIC.fullmatch(pid):
        return None
    refs = deps().refs
    if pid not in refs:
        if len(refs) > 10_000:
            refs.clear()
        secret = chat_ids.key(deps().settings)
        for cid in deps().redis.zrange(chatlog.CHATS, 0, -1):
            refs[chat_ids.public(secret, cid.decode())] = cid.decode()
    return refs.get(pid)


def chat_meta(cid):
    """The chat's details, or None for an unknown or malformed ref."""
    return chatlog.details(deps().redis, cid) if cid and CHAT_ID.fullmatch(cid) else None


def one_chat(pid, reveal=False):
    cid = resolve(pid)
    meta = chat_meta(cid)
    if meta is None:
        return None
    item = summary(meta, time.time(), reveal)
    item["messages"] = [{"id": m["id"], "from": m["from"], "text": m["text"], "at": m["at"],
                         "kind": m.get("kind", "text")} for m in chatlog.thread(deps().redis, cid)]
    return item
