"""What every panel module shares: the bot's connections (`deps()`), how a chat is shown, page rendering."""

import gzip
import json
import re
import secrets
import time
from dataclasses import dataclass, field

from flask import current_app, render_template, request

import ai_service
import attention
import buffer
import chat_ids
import chats
import memory
import sender
from panel import search
from parser import mask

CHAT_ID = re.compile(r"[0-9a-f]{20}")
MEDIA_KINDS = ("image", "audio", "video", "document", "sticker")  # shown through panel/media.py
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
    return render_template(f"panel/{template}", kinds=KIND_LABELS, media_kinds=MEDIA_KINDS, **context)


def summary(meta, now, needs=None, reveal=False):
    """One chat as the API and the pages show it; `needs` is (since, reason) when it needs a person.

    `state` is needs_person then, and `bot_state` always what the bot is doing (the buttons follow it).
    """
    number = meta.get("reply_to", "")
    item = {
        "id": chat_ids.public(chat_ids.key(deps().settings), meta["id"]),  # never the plain ref: it is reversible
        "instance": meta.get("instance", ""), "name": meta.get("name", ""),
        "number_masked": mask(number),
        "last_text": meta.get("last_text", ""), "last_at": int(float(meta.get("last_at") or 0)),
        "last_from": meta.get("last_from", ""),
    }
    item.update(chats.state(deps().redis, meta["id"], now))
    since, reason = needs or (None, None)
    item.update(bot_state=item["state"], needs_person_since=since, needs_person_reason=reason)
    if since is not None:
        item["state"] = "needs_person"
    if reveal:
        item["number"] = number
    return item


def summaries(cids, now=None, reveal=False):
    """These chats, in this order, as `summary` shows them (those that have gone meanwhile left out)."""
    redis, now = deps().redis, time.time() if now is None else now
    needs = attention.waiting(redis, cids)
    return [summary(meta, now, needs.get(meta["id"]), reveal) for meta in memory.details_of(redis, cids)]


def chat_list(q="", state="", cursor="", limit=50):
    """A page of the inbox: {"chats", "total", "next", "needs_person"} (how many need a person, whatever the filter)."""
    if cursor:  # the page shows the cursor's chat by its keyed id; find walks by the Redis ref
        group, score, pid = search.PUBLIC_CURSOR.fullmatch(cursor).groups()
        cursor = f"{group}:{score}:{resolve(pid) or '0' * 20}"  # that chat erased meanwhile: go on after its time
    cids, total, nxt, pinned = search.find(deps().redis, q, state, cursor, limit)
    if nxt:
        group, score, cid = search.CURSOR.fullmatch(nxt).groups()
        nxt = f"{group}:{score}:{chat_ids.public(chat_ids.key(deps().settings), cid)}"
    return {"chats": summaries(cids), "total": total, "next": nxt, "needs_person": pinned}


def resolve(pid):
    """The Redis ref of the chat the panel's URLs call `pid` (its keyed id, chat_ids.py), or None."""
    if not chat_ids.PUBLIC.fullmatch(pid):
        return None
    refs = deps().refs
    if pid not in refs:
        if len(refs) > 10_000:
            refs.clear()
        secret = chat_ids.key(deps().settings)
        for cid in deps().redis.zrange(memory.CHATS, 0, -1):
            refs[chat_ids.public(secret, cid.decode())] = cid.decode()
    return refs.get(pid)


def chat_meta(cid):
    """The chat's details, or None for an unknown or malformed ref."""
    return memory.details(deps().redis, cid) if cid and CHAT_ID.fullmatch(cid) else None


def one_chat(pid, reveal=False):
    """The chat `pid` names (its keyed id) with its messages (and the person's sends still uncertain), or None."""
    cid = resolve(pid)
    found = summaries([cid], reveal=reveal) if cid and CHAT_ID.fullmatch(cid) else []
    if not found:
        return None
    item = found[0]
    messages = [{"id": m["id"], "from": m["from"], "text": m["text"], "at": m["at"], "kind": m.get("kind", "text")}
                for m in memory.thread(deps().redis, cid)]
    messages.sort(key=lambda m: float(m["at"] or 0))  # by the message's time; stable: then as they came in
    item["messages"] = messages + uncertain_sends(deps().redis, cid, messages)
    return item


UNCERTAIN_TTL = 86400


def note_uncertain(redis, cid, text, now):
    """Keep a send whose outcome is unknown, so the thread shows it as "envio incerto" until its echo comes."""
    key = buffer.keys(cid)["uncertain"]
    pipe = redis.pipeline()
    pipe.hset(key, secrets.token_hex(6), json.dumps({"text": text, "at": now}, ensure_ascii=False))
    pipe.expire(key, UNCERTAIN_TTL)
    pipe.execute()


def uncertain_sends(redis, cid, messages):
    """The chat's uncertain sends not yet settled by their echo (a person's message with the same text since)."""
    key = buffer.keys(cid)["uncertain"]
    pending = []
    for token, raw in redis.hgetall(key).items():
        item = json.loads(raw)
        if any(m["from"] == "human" and m["text"] == item["text"] and float(m["at"]) >= item["at"] - 60
               for m in messages):
            redis.hdel(key, token)
        else:
            pending.append({"id": f"uncertain-{token.decode()}", "from": "human", "text": item["text"],
                            "at": item["at"], "kind": "text", "uncertain": True})
    return pending


def conditional(response):
    """An ETag on a list or thread, and 304 to a poll whose If-None-Match says nothing changed."""
    response.add_etag(weak=True)  # one tag for the plain and the gzipped body
    return response.make_conditional(request)


def compress(response):
    """gzip a text or JSON answer past ~1 KB when the browser takes it (every poll of a long thread or list)."""
    if (response.status_code != 200 or response.direct_passthrough or "Content-Encoding" in response.headers
            or "gzip" not in request.headers.get("Accept-Encoding", "")
            or response.mimetype not in ("text/html", "application/json", "text/css", "text/javascript",
                                         "application/javascript", "application/manifest+json")):
        return response
    body = response.get_data()
    if len(body) < 1024:
        return response
    response.set_data(gzip.compress(body, 6))
    response.headers["Content-Encoding"] = "gzip"
    response.vary.add("Accept-Encoding")
    return response
