"""Dedupe and debounce in Redis: who is waiting for an answer, since when, and which job answers them.

Per chat the bot keeps a `burst` (messages not yet taken), an `inflight` list (taken by the job
that is answering them) and, once generated, the `reply` (so a failed send never asks Gemini
again). The sorted set `wa:due` holds, for every chat that needs work, the time a job should look
at it next: the debounce deadline, a retry time, or the end of a running job's lease. A chat in
`wa:due` always has a job coming; if that job is lost (a crash, a Redis restart) `rescue_overdue`
enqueues a new one. Every step is one Lua script, so several webhook and worker processes can
race on one chat and still exactly one job answers each burst.
"""

import hashlib
import json
import logging
import time
import uuid
from datetime import datetime, timezone

from redis.exceptions import NoScriptError

import chatlog

log = logging.getLogger(__name__)

DUE = "wa:due"
JOB = "worker.answer_chat"  # by name, so the webhook never imports the worker's dependencies


def chat_ref(instance, chat_id):
    """A short, stable id for one chat of one instance, safe in Redis keys and RQ job ids."""
    return hashlib.sha1(f"{instance}\n{chat_id}".encode()).hexdigest()[:20]


def keys(cid):
    """Every per-chat key, in one place so scripts and erasure agree."""
    return {
        "burst": f"wa:burst:{cid}",
        "deadline": f"wa:deadline:{cid}",
        "lock": f"wa:lock:{cid}",
        "inflight": f"wa:inflight:{cid}",
        "reply": f"wa:reply:{cid}",
        "attempts": f"wa:attempts:{cid}",
        "paused": f"wa:paused:{cid}",
        "optout": f"wa:optout:{cid}",
        "rate": f"wa:rate:{cid}",
        "session": f"wa:session:{cid}",
        "outgoing": f"wa:outgoing:{cid}",
        "sending": f"wa:sending:{cid}",
        "delivered": f"wa:delivered:{cid}",
        "rescue": f"wa:rescue:{cid}",
        "history": f"wa:history:{cid}",
    }


def seen_key(instance, message_id):
    return f"wa:seen:{instance}:{message_id}"


def own_send_key(instance, message_id):
    return f"wa:ours:{instance}:{message_id}"


def text_digest(text):
    return hashlib.sha1(text.strip().encode()).hexdigest()[:16]


# KEYS: seen, burst, deadline, due, paused, optout, rate, session, lock
# ARGV: dedupe_ttl, entry, deadline, cid, keep_seconds, rate_limit, max_burst, trigger (-1 off, 0 no, 1 yes),
#       session_ttl
ADD_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 'duplicate' end
if redis.call('EXISTS', KEYS[5]) == 1 then return 'paused' end
if redis.call('EXISTS', KEYS[6]) == 1 then return 'opted_out' end
local trigger = tonumber(ARGV[8])
if trigger >= 0 then
  if trigger == 0 and redis.call('EXISTS', KEYS[8]) == 0 then return 'no_trigger' end
  redis.call('SET', KEYS[8], '1', 'EX', ARGV[9])
end
local limit = tonumber(ARGV[6])
if limit > 0 then
  local count = redis.call('INCR', KEYS[7])
  if count == 1 then redis.call('EXPIRE', KEYS[7], 3600) end
  if count > limit then return 'rate_limited' end
end
local size = redis.call('RPUSH', KEYS[2], ARGV[2])
if size > tonumber(ARGV[7]) then redis.call('LTRIM', KEYS[2], -tonumber(ARGV[7]), -1) end
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[5])
local pending = redis.call('ZSCORE', KEYS[4], ARGV[4])
if pending and redis.call('EXISTS', KEYS[9]) == 1 and tonumber(pending) > tonumber(ARGV[3]) then
  return 'buffered'  -- a job is answering: keep its lease end, it schedules this burst when done
end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
if pending then return 'buffered' end
return 'scheduled'
"""

# KEYS: due, lock, burst, deadline, inflight, reply, paused, attempts
# ARGV: cid, token, now, lease_seconds
CLAIM_SCRIPT = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return {'idle'} end
local now = tonumber(ARGV[3])
if tonumber(score) > now then return {'wait', score} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[4]) then return {'locked'} end
if redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('DEL', KEYS[3], KEYS[5], KEYS[6], KEYS[8])
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
  return {'paused'}
end
local has_reply = redis.call('EXISTS', KEYS[6]) == 1
local deadline = tonumber(redis.call('GET', KEYS[4]) or '0')
if not has_reply and deadline <= now then
  local taken = redis.call('LRANGE', KEYS[3], 0, -1)
  for _, entry in ipairs(taken) do redis.call('RPUSH', KEYS[5], entry) end
  redis.call('DEL', KEYS[3])
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
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
return {'ready', redis.call('GET', KEYS[6]) or '', unpack(redis.call('LRANGE', KEYS[5], 0, -1))}
"""

# KEYS: lock, inflight, reply, attempts, burst, deadline, due, sending, delivered
# ARGV: token, cid, now
FINISH_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lost'} end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[8], KEYS[9], KEYS[1])
if redis.call('LLEN', KEYS[5]) > 0 then
  local deadline = math.max(tonumber(redis.call('GET', KEYS[6]) or '0'), tonumber(ARGV[3]))
  redis.call('ZADD', KEYS[7], deadline, ARGV[2])
  return {'next', tostring(deadline)}
end
redis.call('ZREM', KEYS[7], ARGV[2])
redis.call('DEL', KEYS[6])
return {'done'}
"""

# KEYS: lock, due; ARGV: token, cid, retry_at
RETRY_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('DEL', KEYS[1])
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
    """What the worker needs of a message, as stored in the burst (JSON)."""
    return json.dumps({
        "instance": message.instance,
        "chat_id": message.chat_id,
        "reply_to": message.reply_to,
        "message_id": message.message_id,
        "text": message.text,
        "push_name": message.push_name,
        "timestamp": message.timestamp,
        "kind": message.kind,
        "media": message.media,
    }, ensure_ascii=False)


def add_message(redis, queue, message, settings, trigger=None, now=None, also=None):
    """Dedupe and buffer one customer message; schedule the chat's job if it has none.

    Returns what happened: duplicate, paused, opted_out, no_trigger, rate_limited, buffered or
    scheduled. One Redis round trip, plus one to schedule the job when the chat had none pending.
    The same round trip logs the message for the panel; `also(pipe)` may queue more (counters).
    """
    now = time.time() if now is None else now
    cid = chat_ref(message.instance, message.chat_id)
    k = keys(cid)
    deadline = now + settings.debounce_seconds
    keep = int(settings.debounce_seconds + settings.job_lease_seconds + settings.send_retry_minutes * 60 + 3600)
    trigger_flag = -1 if trigger is None else int(bool(trigger))
    script_keys = [seen_key(message.instance, message.message_id), k["burst"], k["deadline"], DUE,
                   k["paused"], k["optout"], k["rate"], k["session"], k["lock"]]
    script_args = [settings.dedupe_ttl_seconds, message_entry(message), repr(deadline), cid, keep,
                   settings.rate_limit_per_hour, settings.max_burst_messages, trigger_flag,
                   int(settings.session_expire_minutes * 60) or 1]
    script = redis.register_script(ADD_SCRIPT)
    pipe = redis.pipeline(transaction=False)  # one round trip: the script, the panel's log, counters
    pipe.evalsha(script.sha, len(script_keys), *script_keys, *script_args)
    chatlog.record_message(pipe, cid, message, "customer", settings)
    if also:
        also(pipe)
    outcome = pipe.execute(raise_on_error=False)[0]
    if isinstance(outcome, NoScriptError):  # first call since Redis started: load it (EVALSHA avoids SCRIPT EXISTS)
        outcome = script(keys=script_keys, args=script_args)
    elif isinstance(outcome, Exception):
        raise outcome
    outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
    if outcome == "scheduled":
        schedule(queue, cid, deadline, settings)
    return outcome


def job_options(settings):
    """RQ options for a chat job: killed before its lease ends, no result kept."""
    return dict(job_timeout=max(settings.job_lease_seconds - 10, 5), result_ttl=0, failure_ttl=86400)


def schedule(queue, cid, when, settings):
    """Enqueue the chat's job for `when` (unix time).

    RQ keeps whole seconds and its scheduler looks once a second. Rounding to the nearest second
    keeps the job's lateness under about 1.4 s; the one in eight that starts early waits out the
    rest (under half a second) in the job itself.
    """
    at = datetime.fromtimestamp(round(when), tz=timezone.utc)
    queue.enqueue_at(at, JOB, cid, **job_options(settings))


def _decode(values):
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def claim(redis, cid, lease_seconds, now=None):
    """Try to take a chat's work. Returns (state, token, reply, entries).

    state is idle (nothing due), wait (not yet: `reply` holds the time), locked (another job has
    it), paused (dropped: a human took over) or ready (we hold the lock; `reply` is a stored reply
    or "", `entries` the messages to answer).
    """
    now = time.time() if now is None else now
    token = uuid.uuid4().hex
    k = keys(cid)
    result = _decode(redis.register_script(CLAIM_SCRIPT)(
        keys=[DUE, k["lock"], k["burst"], k["deadline"], k["inflight"], k["reply"], k["paused"], k["attempts"]],
        args=[cid, token, repr(now), int(lease_seconds)],
    ))
    state = result[0]
    if state == "wait":
        return state, None, float(result[1]), []
    if state != "ready":
        return state, None, None, []
    return state, token, result[1], [json.loads(entry) for entry in result[2:]]


def store_reply(redis, cid, reply):
    """Keep the generated reply (and send progress) so retries and crash recovery reuse it."""
    redis.set(keys(cid)["reply"], json.dumps(reply, ensure_ascii=False), ex=7 * 86400)


def renew(redis, cid, token, lease_seconds, now=None):
    """Extend a running job's lease (before each slow step); False when the lock was lost."""
    now = time.time() if now is None else now
    k = keys(cid)
    return bool(redis.register_script(RENEW_SCRIPT)(keys=[k["lock"], DUE], args=[token, cid, lease_seconds, repr(now)]))


def finish(redis, queue, cid, token, settings, pipe=None, now=None):
    """Forget the answered burst and release the chat; if new messages came meanwhile, schedule them.

    `pipe` lets the caller write history in the same transaction.
    """
    now = time.time() if now is None else now
    k = keys(cid)
    script = redis.register_script(FINISH_SCRIPT)
    args = dict(keys=[k["lock"], k["inflight"], k["reply"], k["attempts"], k["burst"], k["deadline"], DUE,
                      k["sending"], k["delivered"]],
                args=[token, cid, repr(now)])
    if pipe is None:
        result = _decode(script(**args))
    else:
        script(client=pipe, **args)
        result = _decode(pipe.execute()[-1])
    if result[0] == "next":
        schedule(queue, cid, float(result[1]), settings)
    return result[0]


def retry_later(redis, queue, cid, token, delay, settings, now=None):
    """Release the chat and have a job look at it again after `delay` seconds (backoff)."""
    now = time.time() if now is None else now
    k = keys(cid)
    retry_at = now + delay
    if redis.register_script(RETRY_SCRIPT)(keys=[k["lock"], DUE], args=[token, cid, repr(retry_at)]):
        schedule(queue, cid, retry_at, settings)


def count_attempt(redis, cid):
    """One more failed try for the current burst; returns how many so far."""
    key = keys(cid)["attempts"]
    pipe = redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, 86400)
    return pipe.execute()[0]


def rescue_overdue(redis, queue, settings, now=None, limit=200):
    """Enqueue a job now for every chat overdue by more than SWEEP_SECONDS: its job was lost.

    Runs in every worker's maintenance loop; the `rescue` key keeps several workers from piling
    up jobs for one chat. Returns the rescued chat refs.
    """
    now = time.time() if now is None else now
    grace_seconds = settings.sweep_seconds
    overdue = _decode(redis.zrangebyscore(DUE, "-inf", now - grace_seconds, start=0, num=limit))
    rescued = []
    for cid in overdue:
        if redis.set(keys(cid)["rescue"], "1", nx=True, ex=max(int(grace_seconds), 1)):
            queue.enqueue(JOB, cid, **job_options(settings))
            rescued.append(cid)
    if rescued:
        log.warning("rescued %d chat(s) whose job was lost (worker crash or Redis restart)", len(rescued))
    return rescued


# --- Human handoff, owner commands, opt-out ---------------------------------------------------

# KEYS: ours, outgoing, paused, burst, inflight, reply, due, deadline, sending, delivered, seen, attempts
# ARGV: digest, action (pause|resume|stop), pause_seconds, cid, dedupe_ttl
FROM_ME_SCRIPT = """
if not redis.call('SET', KEYS[11], '1', 'NX', 'EX', ARGV[5]) then return 'duplicate' end
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  if redis.call('SISMEMBER', KEYS[9], ARGV[1]) == 1 then
    redis.call('SADD', KEYS[10], ARGV[1])
    redis.call('EXPIRE', KEYS[10], 86400)
  end
  return 'own'
end
if ARGV[2] == 'resume' then redis.call('DEL', KEYS[3]) return 'resumed' end
if ARGV[2] == 'stop' then redis.call('SET', KEYS[3], 'stop') else
  if redis.call('GET', KEYS[3]) == 'stop' then return 'stopped' end
  redis.call('SET', KEYS[3], 'human', 'EX', ARGV[3])
end
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6], KEYS[8], KEYS[12])
redis.call('ZREM', KEYS[7], ARGV[4])
return ARGV[2] == 'stop' and 'stopped' or 'paused'
"""


def note_from_me(redis, message, settings):
    """A `fromMe` message: our own echo, or a human answering from the phone (or an owner command).

    Returns own, resumed, stopped or paused. A human reply pauses the bot in that chat and drops
    what was waiting, so the bot never answers on top of a person.
    """
    cid = chat_ref(message.instance, message.chat_id)
    k = keys(cid)
    text = message.text.strip().lower()
    action = "pause"
    if settings.resume_keyword and text == settings.resume_keyword.lower():
        action = "resume"
    elif settings.stop_keyword and text == settings.stop_keyword.lower():
        action = "stop"
    result = redis.register_script(FROM_ME_SCRIPT)(
        keys=[own_send_key(message.instance, message.message_id), k["outgoing"], k["paused"], k["burst"],
              k["inflight"], k["reply"], DUE, k["deadline"], k["sending"], k["delivered"],
              seen_key(message.instance, message.message_id), k["attempts"]],
        args=[text_digest(message.text), action, int(settings.handoff_pause_minutes * 60) or 1, cid,
              settings.dedupe_ttl_seconds],
    )
    return result.decode() if isinstance(result, bytes) else result


def pause(redis, cid, seconds):
    """Keep the bot quiet in a chat for `seconds` (a customer asked for a person)."""
    redis.set(keys(cid)["paused"], "human", ex=max(int(seconds), 1))


def is_paused(redis, cid):
    return bool(redis.exists(keys(cid)["paused"]))


def opt_out(redis, cid, seconds):
    """The customer asked the bot to stop; messages are ignored until `seconds` pass."""
    redis.set(keys(cid)["optout"], "1", ex=max(int(seconds), 1))


def note_outgoing(redis, instance, cid, text, message_id=None):
    """Remember what we send (text before, id after) so its `fromMe` echo is not taken for a human."""
    k = keys(cid)
    pipe = redis.pipeline()
    if message_id:
        pipe.set(own_send_key(instance, message_id), "1", ex=86400)
    else:
        for key, ttl in ((k["outgoing"], 3600), (k["sending"], 7 * 86400)):
            pipe.sadd(key, text_digest(text))
            pipe.expire(key, ttl)
    pipe.execute()


def was_delivered(redis, cid, text):
    """True when Evolution already echoed this part back: a send whose answer we lost still went out."""
    return bool(redis.sismember(keys(cid)["delivered"], text_digest(text)))


def forget_chat(redis, instance, chat_id):
    """Erase everything kept about one chat (LGPD requests). Returns how many keys were deleted."""
    cid = chat_ref(instance, chat_id)
    pipe = redis.pipeline()
    pipe.delete(*keys(cid).values())
    pipe.zrem(DUE, cid)
    chatlog.erase(pipe, cid)
    return pipe.execute()[0]
