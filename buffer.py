"""Dedupe and debounce in Redis: who is waiting for an answer, since when, and which job answers them.

Per chat the bot keeps a `burst` (messages not yet taken), an `inflight` list (taken by the job
that is answering them) and, once generated, the `reply` (so a failed send never asks Gemini
again). The sorted set `wa:due` holds, for every chat that needs work, the time a job should look
at it next: the debounce deadline, a retry time, the next part of a reply, or the end of a running
job's lease. It is the only schedule: the workers' dispatchers (dispatch.py) enqueue a job for each
chat whose time has come, and again if that job is lost. Every step is one Lua script, so several
webhook and worker processes can race on one chat and still exactly one job answers each burst.

A job holds the chat through its `lock` token. Every write a job makes (its reply, its history,
its release) checks that token, and a person acting in the chat deletes the lock (chats.py): so a
job that started before a person spoke never sends or writes anything afterwards.
"""

import base64
import binascii
import hashlib
import json
import time
import uuid

from redis.exceptions import NoScriptError

import chatlog
import memory
import stats


DUE = "wa:due"
QUEUED = "wa:queued"  # chat ref -> "<job id> <time the dispatcher moved the chat to>" while its job waits (dispatch.py)


def chat_ref(instance, chat_id, channel="evolution"):
    """A short, stable id for one chat of one instance, safe in Redis keys.

    Other channels' chats are keyed with the channel too, so a Cloud API `phone_number_id` or a Twilio number
    never meets an Evolution instance of the same name (Evolution's keys are unchanged).
    """
    scope = instance if channel == "evolution" else f"{channel}\n{instance}"
    return hashlib.sha1(f"{scope}\n{chat_id}".encode()).hexdigest()[:20]


def keys(cid):
    """Every per-chat key, in one place so scripts and erasure agree."""
    return {
        "burst": f"wa:burst:{cid}",
        "deadline": f"wa:deadline:{cid}",
        "started": f"wa:started:{cid}",
        "taken": f"wa:taken:{cid}",
        "lock": f"wa:lock:{cid}",
        "inflight": f"wa:inflight:{cid}",
        "reply": f"wa:reply:{cid}",
        "attempts": f"wa:attempts:{cid}",
        "regenerated": f"wa:regenerated:{cid}",
        "paused": f"wa:paused:{cid}",
        "optout": f"wa:optout:{cid}",
        "rate": f"wa:rate:{cid}",
        "session": f"wa:session:{cid}",
        "delivered": f"wa:delivered:{cid}",
        "media": f"wa:media:{cid}",
        "followup": f"wa:followup:{cid}",  # followup.py
        "history": memory.key(cid),
    }


def seen_key(instance, message_id):
    return f"wa:seen:{instance}:{message_id}"


def own_send_key(instance, message_id):
    """Set once sendText answered with our message's id; holds the chat ref and reply id it belongs to."""
    return f"wa:ours:{instance}:{message_id}"


def lid_key(instance, jid):
    """The '@lid' JID a customer's phone JID was last seen with on `instance`."""
    return f"wa:lid:{instance}:{jid}"


def sending_key(instance, text):
    """Chats with a part of this text on its way and no id known yet (the echo may come first)."""
    return f"wa:sending:{instance}:{text_digest(text)}"


def text_digest(text):
    return hashlib.sha1(text.strip().encode()).hexdigest()[:16]


# KEYS: seen, burst, deadline, due, paused, optout, rate, session, lock, started, history, reply,
#       log keys (3), count keys (2)
# ARGV: dedupe_ttl, entry, now, cid, keep_seconds, rate_limit, max_burst, trigger (-1 off, 0 no, 1 yes),
#       session_ttl, debounce, max_wait, user turn, history args (3), log args (7), counts JSON
ADD_SCRIPT = memory.LUA_HISTORY + chatlog.LUA_LOG + stats.LUA_COUNT + """
count_all(KEYS[16], KEYS[17], ARGV[23])
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {'duplicate'} end
log_entry({KEYS[13], KEYS[14], KEYS[15]}, ARGV[4], 16)  -- the panel's log, whatever happens to the message next
for i, held in ipairs({'paused', 'opted_out'}) do
  if redis.call('EXISTS', KEYS[4 + i]) == 1 then  -- a person (or the customer's opt-out) holds the chat
    push_turn(KEYS[11], ARGV[12], cap(13))
    return {held}
  end
end
local trigger = tonumber(ARGV[8])
if trigger >= 0 then
  if trigger == 0 and redis.call('EXISTS', KEYS[8]) == 0 then return {'no_trigger'} end
  redis.call('SET', KEYS[8], '1', 'EX', ARGV[9])
end
local limit = tonumber(ARGV[6])
if limit > 0 then
  local count = redis.call('INCR', KEYS[7])
  if count == 1 then redis.call('EXPIRE', KEYS[7], 3600) end
  if count > limit then return {'rate_limited'} end
end
local size = redis.call('RPUSH', KEYS[2], ARGV[2])
if size > tonumber(ARGV[7]) then redis.call('LTRIM', KEYS[2], -tonumber(ARGV[7]), -1) end
redis.call('EXPIRE', KEYS[2], ARGV[5])
local now = tonumber(ARGV[3])
redis.call('SET', KEYS[10], ARGV[3], 'NX', 'EX', ARGV[5])
local started = tonumber(redis.call('GET', KEYS[10]))
local deadline = math.min(now + tonumber(ARGV[10]), started + tonumber(ARGV[11]))  -- MAX_WAIT_SECONDS caps it
redis.call('SET', KEYS[3], tostring(deadline), 'EX', ARGV[5])
local pending = redis.call('ZSCORE', KEYS[4], ARGV[4])
if pending and (redis.call('EXISTS', KEYS[9]) == 1 or redis.call('EXISTS', KEYS[12]) == 1) then
  return {'buffered'}  -- a job is answering (or its reply going out part by part): it schedules this burst when done
end
redis.call('ZADD', KEYS[4], deadline, ARGV[4])
if pending then return {'buffered'} end
return {'scheduled', tostring(deadline)}
"""
ADD_SHA = hashlib.sha1(ADD_SCRIPT.encode()).hexdigest()  # run for every message: hashed once

# KEYS: due, lock, burst, deadline, inflight, reply, paused, attempts, optout, started, taken, queued
# ARGV: cid, token, now, lease_seconds, ticket (the job's id from the dispatcher, or '')
CLAIM_SCRIPT = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local ours = false
local mark = redis.call('HGET', KEYS[12], ARGV[1])
if mark and ARGV[5] ~= '' then
  local job, moved_to = string.match(mark, '^(%S+) (%S+)$')
  if job == ARGV[5] then  -- the chat's queued job has started: a later one is queued afresh
    redis.call('HDEL', KEYS[12], ARGV[1])
    ours = score and tonumber(score) == tonumber(moved_to)  -- else the chat moved on since (a new message)
  end
end
if not score then return {'idle'} end
local now = tonumber(ARGV[3])
if tonumber(score) > now and not ours then return {'wait', score} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[4]) then return {'locked'} end
if redis.call('EXISTS', KEYS[7]) == 1 or redis.call('EXISTS', KEYS[9]) == 1 then
  redis.call('DEL', KEYS[3], KEYS[5], KEYS[6], KEYS[8], KEYS[4], KEYS[10], KEYS[11], KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {'paused'}
end
local has_reply = redis.call('EXISTS', KEYS[6]) == 1
local deadline = tonumber(redis.call('GET', KEYS[4]) or '0')
if not has_reply and deadline <= now then
  local taken = redis.call('LRANGE', KEYS[3], 0, -1)
  for _, entry in ipairs(taken) do redis.call('RPUSH', KEYS[5], entry) end
  if #taken > 0 then
    redis.call('EXPIRE', KEYS[5], 7 * 86400)  -- like the stored reply: never kept forever
    -- when the burst being answered began: a burst joined to it later does not restart MAX_WAIT_SECONDS
    redis.call('SET', KEYS[11], redis.call('GET', KEYS[10]) or ARGV[3], 'NX', 'EX', 7 * 86400)
  end
  redis.call('DEL', KEYS[3], KEYS[10])
end
if not has_reply and redis.call('LLEN', KEYS[5]) == 0 then
  redis.call('DEL', KEYS[2])
  if redis.call('LLEN', KEYS[3]) > 0 then
    redis.call('ZADD', KEYS[1], deadline, ARGV[1])
    return {'wait', tostring(deadline)}
  end
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {'idle'}
end
local tries = 0
if not has_reply then  -- every try at composing counts, also one killed mid-way: a job never loops
  tries = redis.call('INCR', KEYS[8])
  redis.call('EXPIRE', KEYS[8], 86400)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]) + 1, ARGV[1])  -- looked at again once the lock has expired
return {'ready', redis.call('GET', KEYS[6]) or '', tostring(tries), unpack(redis.call('LRANGE', KEYS[5], 0, -1))}
"""

# KEYS: lock, reply; ARGV: token, reply JSON
STORE_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', 7 * 86400)
return 1
"""

# KEYS: lock, burst, deadline, due, reply, attempts, regenerated, taken
# ARGV: token, cid, now, max_regenerations, max_wait
REJOIN_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('LLEN', KEYS[2]) == 0 then return {'keep'} end
if tonumber(redis.call('GET', KEYS[7]) or '0') >= tonumber(ARGV[4]) then return {'keep'} end
local now = tonumber(ARGV[3])
local cap = tonumber(redis.call('GET', KEYS[8]) or ARGV[3]) + tonumber(ARGV[5])
if now >= cap then return {'keep'} end  -- waited MAX_WAIT_SECONDS since its first message: this reply goes out
redis.call('INCR', KEYS[7])
redis.call('EXPIRE', KEYS[7], 86400)
redis.call('DEL', KEYS[5], KEYS[6], KEYS[1])
local deadline = math.max(math.min(tonumber(redis.call('GET', KEYS[3]) or '0'), cap), now)
redis.call('SET', KEYS[3], tostring(deadline), 'KEEPTTL')
redis.call('ZADD', KEYS[4], deadline, ARGV[2])
return {'rejoined', tostring(deadline)}
"""

# KEYS: lock, inflight, reply, attempts, burst, deadline, due, delivered, regenerated, paused, optout, history,
#       started, media, taken
# ARGV: token, cid, now, hold ('' | 'handoff' | 'optout'), hold_seconds, user turn, model turn,
#       history args (3)
FINISH_SCRIPT = memory.LUA_HISTORY + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lost'} end
if ARGV[6] ~= '' then push_turn(KEYS[12], ARGV[6], cap(8)) end
if ARGV[7] ~= '' then push_turn(KEYS[12], ARGV[7], cap(8)) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[8], KEYS[9], KEYS[14], KEYS[15], KEYS[1])
if ARGV[4] ~= '' then
  if ARGV[4] == 'optout' then
    redis.call('SET', KEYS[11], '1', 'EX', ARGV[5])
  elseif redis.call('GET', KEYS[10]) ~= 'stop' then
    redis.call('SET', KEYS[10], 'handoff', 'EX', ARGV[5])
  end
  push_entries(KEYS[12], KEYS[5], cap(8))  -- written meanwhile: for the person, not a new burst
  redis.call('DEL', KEYS[5], KEYS[6], KEYS[13])
  redis.call('ZREM', KEYS[7], ARGV[2])
  return {'done'}
end
if redis.call('LLEN', KEYS[5]) > 0 then
  local deadline = math.max(tonumber(redis.call('GET', KEYS[6]) or '0'), tonumber(ARGV[3]))
  redis.call('ZADD', KEYS[7], deadline, ARGV[2])
  return {'next', tostring(deadline)}
end
redis.call('ZREM', KEYS[7], ARGV[2])
redis.call('DEL', KEYS[6])
return {'done'}
"""

# KEYS: lock, due, reply; ARGV: token, cid, retry_at, reply JSON ('' keeps the stored one)
RETRY_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'EX', 7 * 86400) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: lock, due, reply, sending; ARGV: token, cid, lease_seconds, now, reply JSON, sending entry
ATTEMPT_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[3])
local score = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[2]) or '0')
redis.call('ZADD', KEYS[2], math.max(score, tonumber(ARGV[4]) + tonumber(ARGV[3])), ARGV[2])
redis.call('SET', KEYS[3], ARGV[5], 'EX', 7 * 86400)
redis.call('RPUSH', KEYS[4], ARGV[6])
redis.call('EXPIRE', KEYS[4], 3600)
return 1
"""

# KEYS: lock, media; ARGV: token, message id, bytes, seconds
CACHE_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

# KEYS: lock, due; ARGV: token, cid, lease_seconds, now
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[3])
local score = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[2]) or '0')
redis.call('ZADD', KEYS[2], math.max(score, tonumber(ARGV[4]) + tonumber(ARGV[3])), ARGV[2])
return 1
"""


def message_entry(message):
    """What the worker needs of a message, as stored in the burst (JSON). Media bytes never: only the id to fetch them."""
    media = {name: value for name, value in message.media.items() if name != "base64"}
    return json.dumps({
        "instance": message.instance,
        "chat_id": message.chat_id,
        "reply_to": message.reply_to,
        "message_id": message.message_id,
        "text": message.text,
        "push_name": message.push_name,
        "timestamp": message.timestamp,
        "kind": message.kind,
        "media": media,
        "channel": message.channel,
    }, ensure_ascii=False)


def add_message(redis, message, settings, trigger=None, now=None, counts=None):
    """Dedupe and buffer one customer message; set the chat's debounce deadline in `wa:due`.

    Returns what happened: duplicate, paused, opted_out, no_trigger, rate_limited, buffered (a
    later message of a burst) or scheduled (the first). One Redis round trip.
    While a person holds the chat (paused, opted out) the message goes to history instead.
    The same script logs the message for the panel and adds `counts` ({field: n}) to the counters.
    """
    now = time.time() if now is None else now
    cid = chat_ref(message.instance, message.chat_id, message.channel)
    k = keys(cid)
    keep = int(settings.debounce_seconds + settings.job_lease_seconds + settings.send_retry_minutes * 60 + 3600)
    trigger_flag = -1 if trigger is None else int(bool(trigger))
    item, meta = chatlog.message_entry(message, "customer")
    script_keys = [seen_key(message.instance, message.message_id), k["burst"], k["deadline"], DUE,
                   k["paused"], k["optout"], k["rate"], k["session"], k["lock"], k["started"], k["history"], k["reply"],
                   *chatlog.log_keys(cid), *stats.count_keys(now)]
    script_args = [settings.dedupe_ttl_seconds, message_entry(message), repr(now), cid, keep,
                   settings.rate_limit_per_hour, settings.max_burst_messages, trigger_flag,
                   int(settings.session_expire_minutes * 60) or 1, settings.debounce_seconds, settings.max_wait_seconds,
                   memory.turn("user", message.text or f"[{message.kind}]"), *memory.history_args(settings),
                   *chatlog.log_args(item, settings, meta, now), json.dumps(counts or {})]
    pipe = redis.pipeline(transaction=False)  # one round trip, and for a text message one command
    pipe.evalsha(ADD_SHA, len(script_keys), *script_keys, *script_args)  # EVALSHA: no SCRIPT EXISTS first
    inline = inline_media(message, settings)
    if inline:  # kept aside a few minutes, never in the burst: some instances cannot serve it again
        pipe.hset(k["media"], message.message_id, inline)
        pipe.expire(k["media"], int(settings.debounce_seconds + settings.max_wait_seconds) + MEDIA_CACHE_SECONDS)
    if message.lid and message.lid != message.chat_id:  # the customer's '@lid' address too, so forget finds both
        pipe.set(lid_key(message.instance, message.chat_id), message.lid, ex=settings.history_ttl_seconds)
    result = pipe.execute(raise_on_error=False)[0]
    if isinstance(result, NoScriptError):  # first call since Redis started: load it
        result = redis.register_script(ADD_SCRIPT)(keys=script_keys, args=script_args)
    elif isinstance(result, Exception):
        raise result
    return _decode(result)[0]


MEDIA_CACHE_SECONDS = 600  # media kept for a burst's retries (Gemini's backoff is about a minute)


def inline_media(message, settings):
    """The bytes of media Evolution sent inline (webhook base64), when valid and within MAX_MEDIA_MB; else None.

    A WHATSAPP-BUSINESS (Cloud API) instance's getBase64FromMediaMessage only echoes what it is given,
    so for those the webhook's copy is the only one.
    """
    encoded = message.media.get("base64")
    if not isinstance(encoded, str) or len(encoded) * 3 // 4 > settings.max_media_mb * 1024 * 1024:
        return None
    try:
        return base64.b64decode(encoded, validate=True) or None
    except (binascii.Error, ValueError):
        return None


def _decode(values):
    if not isinstance(values, list):
        values = [values]
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def claim(redis, cid, lease_seconds, ticket="", now=None):
    """Try to take a chat's work. Returns (state, token, reply, entries, tries).

    state is idle (nothing due), wait (not yet, or the chat moved on since the dispatcher queued
    the job `ticket`: `reply` holds the time), locked (another job has it), paused (dropped: a person holds
    the chat) or ready (we hold the lock; `reply` is a stored reply or "", `entries` the messages
    to answer, `tries` how many times composing them started).
    """
    now = time.time() if now is None else now
    token = uuid.uuid4().hex
    k = keys(cid)
    result = _decode(redis.register_script(CLAIM_SCRIPT)(
        keys=[DUE, k["lock"], k["burst"], k["deadline"], k["inflight"], k["reply"], k["paused"], k["attempts"],
              k["optout"], k["started"], k["taken"], QUEUED],
        args=[cid, token, repr(now), int(lease_seconds), ticket or ""],
    ))
    state = result[0]
    if state == "wait":
        return state, None, float(result[1]), [], 0
    if state != "ready":
        return state, None, None, [], 0
    return state, token, result[1], [json.loads(entry) for entry in result[3:]], int(result[2])


def store_reply(redis, cid, token, reply):
    """Keep the generated reply (and send progress) so retries and crash recovery reuse it.

    Only while `token` still holds the chat: False when a person took over meanwhile.
    """
    k = keys(cid)
    return bool(redis.register_script(STORE_SCRIPT)(keys=[k["lock"], k["reply"]],
                                            args=[token, json.dumps(reply, ensure_ascii=False)]))


def renew(redis, cid, token, lease_seconds, now=None):
    """Extend a running job's lease (before each slow step); False when the lock was lost."""
    now = time.time() if now is None else now
    k = keys(cid)
    return bool(redis.register_script(RENEW_SCRIPT)(keys=[k["lock"], DUE], args=[token, cid, lease_seconds, repr(now)]))


def attempt(redis, instance, cid, token, reply, text, lease_seconds, now=None):
    """Just before a part goes out: renew the lease, and store that part `reply["sent"]` is being sent.

    If the job then stops before it records the outcome (killed, Redis gone), the next job finds the
    attempt and counts the part as sent: the customer may have it, and must never get it twice. The
    part's text is remembered too, for an echo that comes before sendText answers (`note_sending`).
    False when the lock was lost: nothing may be sent.
    """
    now = time.time() if now is None else now
    k = keys(cid)
    reply["attempt"] = reply["sent"]
    return bool(redis.register_script(ATTEMPT_SCRIPT)(
        keys=[k["lock"], DUE, k["reply"], sending_key(instance, text)],
        args=[token, cid, lease_seconds, repr(now), json.dumps(reply, ensure_ascii=False), f"{cid} {reply['rid']}"],
    ))


def cache_media(redis, cid, token, message_id, data):
    """Keep a downloaded media file for the burst's retries, only while `token` holds the chat: a chat erased
    (or taken over) during the download gets nothing written back. False when the lock was lost."""
    k = keys(cid)
    return bool(redis.register_script(CACHE_SCRIPT)(keys=[k["lock"], k["media"]],
                                            args=[token, message_id, data, MEDIA_CACHE_SECONDS]))


def rejoin(redis, cid, token, settings, now=None):
    """Before a reply goes out: if the customer wrote meanwhile, drop the reply and answer everything at once.

    The new messages join the burst being answered; the chat is released until their debounce ends.
    At most MAX_REGENERATIONS times per burst, and never once the burst has waited MAX_WAIT_SECONDS from its
    first message: then this reply goes out and the new messages are answered next. True when the reply was dropped.
    """
    now = time.time() if now is None else now
    k = keys(cid)
    result = _decode(redis.register_script(REJOIN_SCRIPT)(
        keys=[k["lock"], k["burst"], k["deadline"], DUE, k["reply"], k["attempts"], k["regenerated"], k["taken"]],
        args=[token, cid, repr(now), settings.max_regenerations, settings.max_wait_seconds],
    ))
    return result[0] == "rejoined"


def finish(redis, cid, token, settings, user_turn="", model_turn="", hold="", now=None):
    """Write the exchange to history and release the chat, only while `token` holds it.

    `hold` keeps the bot quiet afterwards: "handoff" (paused for HANDOFF_PAUSE_MINUTES, never
    overriding a `#parar`) or "optout" (OPTOUT_DAYS). If new messages came meanwhile, they are
    scheduled as the next burst (or, under a hold, kept in history for the person).
    Returns done, next or lost.
    """
    now = time.time() if now is None else now
    k = keys(cid)
    seconds = {"handoff": settings.handoff_pause_minutes * 60, "optout": settings.optout_days * 86400}.get(hold, 0)
    result = _decode(redis.register_script(FINISH_SCRIPT)(
        keys=[k["lock"], k["inflight"], k["reply"], k["attempts"], k["burst"], k["deadline"], DUE,
              k["delivered"], k["regenerated"], k["paused"], k["optout"], k["history"], k["started"], k["media"],
              k["taken"]],
        args=[token, cid, repr(now), hold, max(int(seconds), 1), user_turn, model_turn,
              *memory.history_args(settings)],
    ))
    return result[0]


def retry_later(redis, cid, token, delay, reply=None, now=None):
    """Release the chat and have a job look at it again after `delay` seconds: a backoff, or a part's typing time.

    `reply`, when given, is stored with it (the send progress). False when `token` no longer holds the chat.
    """
    now = time.time() if now is None else now
    k = keys(cid)
    stored = json.dumps(reply, ensure_ascii=False) if reply is not None else ""
    return bool(redis.register_script(RETRY_SCRIPT)(keys=[k["lock"], DUE, k["reply"]],
                                            args=[token, cid, repr(now + delay), stored]))


def count_attempt(redis, cid):
    """One more failed send for the current reply; returns how many so far (for the backoff)."""
    key = keys(cid)["attempts"]
    pipe = redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, 86400)
    return pipe.execute()[0]


# --- Our own sends, told apart from a person's ----------------------------------------------------

def note_sending(redis, instance, cid, rid, text):
    """Before sendText: the echo may arrive before its id is known, so remember the text for that moment.

    `rid` names the reply being sent, so a late echo of an earlier reply never counts for this one.
    """
    pipe = redis.pipeline()
    pipe.rpush(sending_key(instance, text), f"{cid} {rid}")
    pipe.expire(sending_key(instance, text), 3600)
    pipe.execute()


def note_sent(redis, instance, cid, rid, text, message_id):
    """After sendText: from now on our echo is recognised by its id only, so an owner's identical text is the owner's."""
    pipe = redis.pipeline()
    pipe.lrem(sending_key(instance, text), 0, f"{cid} {rid}")
    if message_id:
        pipe.set(own_send_key(instance, message_id), f"{cid} {rid}", ex=86400)
    pipe.execute()


def delivered_count(redis, cid, rid, text):
    """How many echoes of this text arrived for reply `rid`: a send whose answer we lost still went out."""
    return int(redis.hget(keys(cid)["delivered"], f"{rid}:{text_digest(text)}") or 0)
