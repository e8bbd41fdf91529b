"""Every message of a chat (customer, bot, person) for the panel, and the index of chats by last activity.

History (memory.py) keeps only what Gemini needs; this log keeps what a person reads. It lives in
Redis beside history: capped at LOG_MAX_ENTRIES per chat, expiring after HISTORY_TTL_DAYS, erased
by forget. Writes only queue commands on a pipeline, so they ride in round trips already made.
"""

import json
import time

from redis.exceptions import WatchError

from parser import to_int

CHATS = "wa:chats"  # sorted set: cid -> last activity (unix time)


def log_key(cid):
    return f"wa:log:{cid}"


def meta_key(cid):
    return f"wa:chat:{cid}"


def entry(message_id, sender, text, at, kind="text"):
    """One log entry; the same message always gives the same entry, so a duplicate is stored once.

    `at` is the message's own timestamp (whole seconds from WhatsApp) or, for the bot's parts, the
    time of sending to the millisecond, so parts sent within one second keep their order.
    """
    at = round(at, 3) if isinstance(at, float) else to_int(at) or round(time.time(), 3)
    return {"id": message_id, "from": sender, "text": text or "", "at": at, "kind": kind}


def record(pipe, cid, item, settings, meta=None):
    """Queue on `pipe` the writes for one entry: the log (capped, expiring), the chat index and the last message.

    The score is the entry's `at`, plus for whole seconds a fraction from the arrival time, so two
    messages of one second keep the order they came in.
    """
    ttl = settings.history_ttl_seconds
    key = log_key(cid)
    at = item["at"]
    if isinstance(at, int):  # whole seconds: arrival order breaks ties within the second
        at += min(max(time.time() - at, 0), 0.999)
    pipe.zadd(key, {json.dumps(item, sort_keys=True, ensure_ascii=False): at}, nx=True)  # nx: a copy keeps its place
    pipe.zremrangebyrank(key, 0, -settings.log_max_entries - 1)
    pipe.expire(key, ttl)
    pipe.zadd(CHATS, {cid: item["at"]}, gt=True)
    pipe.zremrangebyscore(CHATS, "-inf", time.time() - ttl)  # chats whose log has expired leave the index
    fields = {"last_text": item["text"] or f"[{item['kind']}]", "last_at": item["at"], "last_from": item["from"]}
    pipe.hset(meta_key(cid), mapping={**fields, **(meta or {})})
    pipe.expire(meta_key(cid), ttl)


def chat_meta(instance, chat_id, reply_to, name="", channel="evolution"):
    """Who the chat is with and through which instance (the name only when known) and channel (when not Evolution)."""
    fields = {"instance": instance, "chat_id": chat_id, "reply_to": reply_to}
    if name:
        fields["name"] = name
    if channel != "evolution":
        fields["channel"] = channel
    return fields


def record_message(pipe, cid, message, sender, settings):
    """Queue on `pipe` the log entry and chat details of one parsed WhatsApp message."""
    meta = chat_meta(message.instance, message.chat_id, message.reply_to,
                     message.push_name if sender == "customer" else "", message.channel)
    record(pipe, cid, entry(message.message_id, sender, message.text, message.timestamp, message.kind), settings, meta)


def record_sent(redis, cid, message_id, text, settings, lock_key, token):
    """Log one part of the bot's reply as it goes out (the id Evolution answered).

    Only while the sending job still holds the chat (`lock_key` holds its `token`): a chat erased
    or taken over meanwhile gets nothing written back. Returns whether it was logged.
    """
    with redis.pipeline() as pipe:
        try:
            pipe.watch(lock_key)
            if pipe.get(lock_key) != token.encode():
                return False
            pipe.multi()
            record(pipe, cid, entry(message_id, "bot", text, time.time()), settings)
            pipe.execute()
        except WatchError:
            return False
    return True


def erase(pipe, cid):
    """Queue on `pipe` the erasure of a chat's log and details (LGPD, with forget)."""
    pipe.delete(log_key(cid), meta_key(cid))
    pipe.zrem(CHATS, cid)


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def chats(redis, limit=200):
    """The most recently active chats, newest first: [{id, instance, chat_id, reply_to, name, last_*}]."""
    cids = [_text(cid) for cid in redis.zrevrange(CHATS, 0, limit - 1)]
    pipe = redis.pipeline(transaction=False)
    for cid in cids:
        pipe.hgetall(meta_key(cid))
    found = []
    for cid, meta in zip(cids, pipe.execute() if cids else []):
        if meta:
            found.append({"id": cid, **{_text(k): _text(v) for k, v in meta.items()}})
    return found


def details(redis, cid):
    """One chat's details (instance, reply_to, name, last message), or None when unknown."""
    meta = redis.hgetall(meta_key(cid))
    return {"id": cid, **{_text(k): _text(v) for k, v in meta.items()}} if meta else None


def thread(redis, cid):
    """The chat's log, oldest first."""
    return [json.loads(member) for member in redis.zrange(log_key(cid), 0, -1)]
