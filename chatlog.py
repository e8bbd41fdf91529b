"""Every message of a chat (customer, bot, person) for the panel, and the index of chats by last activity.

History (memory.py) keeps only what Gemini needs; this log keeps what a person reads. It lives in
Redis beside history: capped at LOG_MAX_ENTRIES per chat, expiring after HISTORY_TTL_DAYS, erased
by forget. One Lua function writes an entry: the webhook's own script calls it (a customer's
message costs no command of its own), and `record` runs it for everyone else.
"""

import json
import time

from parser import to_int

CHATS = "wa:chats"  # sorted set: cid -> last activity (unix time)

# `log_entry(keys, cid, i)`: keys = {log, meta, chats}; ARGV[i..i+6] = log_args().
LUA_LOG = """
local function log_entry(keys, cid, i)
  redis.call('ZADD', keys[1], 'NX', ARGV[i + 1], ARGV[i])  -- NX: a copy of an entry keeps its place
  redis.call('ZREMRANGEBYRANK', keys[1], 0, -tonumber(ARGV[i + 5]) - 1)
  redis.call('EXPIRE', keys[1], ARGV[i + 6])
  redis.call('ZADD', keys[3], 'GT', ARGV[i + 2], cid)
  redis.call('ZREMRANGEBYSCORE', keys[3], '-inf', ARGV[i + 3])  -- chats whose log has expired leave the index
  local fields = {}
  for name, value in pairs(cjson.decode(ARGV[i + 4])) do
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  redis.call('HSET', keys[2], unpack(fields))
  redis.call('EXPIRE', keys[2], ARGV[i + 6])
end
"""

# KEYS: log, meta, chats[, lock]; ARGV: cid, token, log args (7). With a lock, only while it holds `token`.
LOG_SCRIPT = LUA_LOG + """
if KEYS[4] and redis.call('GET', KEYS[4]) ~= ARGV[2] then return 0 end
log_entry(KEYS, ARGV[1], 3)
return 1
"""


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


def log_keys(cid):
    return [log_key(cid), meta_key(cid), CHATS]


def log_args(item, settings, meta=None, now=None):
    """The arguments `log_entry` takes for one entry: the log (capped, expiring), the chat index and the last message.

    The score is the entry's `at`, plus for whole seconds a fraction from the arrival time (how late it
    came, up to an hour), so messages of one second keep the order they came in even when delivered late.
    """
    now = time.time() if now is None else now
    ttl = settings.history_ttl_seconds
    at = item["at"]
    late = min(max(now - at, 0), 3600) / 3600 * 0.999 if isinstance(at, int) else None
    score = at + late if late is not None else at  # whole seconds: arrival order breaks ties
    fields = {"last_text": item["text"] or f"[{item['kind']}]", "last_at": item["at"], "last_from": item["from"],
              **(meta or {})}
    return [json.dumps(item, sort_keys=True, ensure_ascii=False), repr(score), repr(item["at"]), repr(now - ttl),
            json.dumps({name: str(value) for name, value in fields.items()}, ensure_ascii=False),
            settings.log_max_entries, ttl]


def record(redis, cid, item, settings, meta=None, lock_key=None, token=None):
    """Write one entry now; with `lock_key`, only while it holds `token`. Returns whether it was written."""
    keys = log_keys(cid) + ([lock_key] if lock_key else [])
    return bool(redis.register_script(LOG_SCRIPT)(keys=keys, args=[cid, token or "", *log_args(item, settings, meta)]))


def chat_meta(instance, chat_id, reply_to, name="", channel="evolution"):
    """Who the chat is with and through which instance (the name only when known) and channel (when not Evolution)."""
    fields = {"instance": instance, "chat_id": chat_id, "reply_to": reply_to}
    if name:
        fields["name"] = name
    if channel != "evolution":
        fields["channel"] = channel
    return fields


def message_entry(message, sender):
    """The log entry and chat details of one parsed WhatsApp message, as (item, meta)."""
    meta = chat_meta(message.instance, message.chat_id, message.reply_to,
                     message.push_name if sender == "customer" else "", message.channel)
    return entry(message.message_id, sender, message.text, message.timestamp, message.kind), meta


def record_message(redis, cid, message, sender, settings):
    """Write the log entry and chat details of one parsed WhatsApp message (a person's, from the phone)."""
    item, meta = message_entry(message, sender)
    record(redis, cid, item, settings, meta)


def record_sent(redis, cid, message_id, text, settings, lock_key, token):
    """Log one part of the bot's reply as it goes out (the id Evolution answered).

    Only while the sending job still holds the chat (`lock_key` holds its `token`): a chat erased
    or taken over meanwhile gets nothing written back. Returns whether it was logged.
    """
    return record(redis, cid, entry(message_id, "bot", text, time.time()), settings, lock_key=lock_key, token=token)


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
