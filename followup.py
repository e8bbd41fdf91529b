"""One follow-up after silence (FOLLOWUP_AFTER_MINUTES): a nudge when the bot spoke last and the customer went quiet.

It rides `wa:due` like everything else: when a reply has gone out, `after_reply` writes the chat's
follow-up (`wa:followup:<cid>`: when, to whom, when the customer last wrote) and puts the chat in
`wa:due` at that time. The dispatcher enqueues the chat's job as usual; the job finds no burst to
answer (`buffer.claim` says idle) and hands over to `run`, which sends the follow-up only if
nothing changed: the customer has not written (the chat's last message is still the bot's, no
burst), no person holds it (paused, stopped, opted out, handed over: a person's action also erases
the follow-up, chats.py), it is inside WhatsApp's 24-hour window with an hour to spare
(`WINDOW_SECONDS`) and inside BUSINESS_HOURS (else it waits, in `wa:due`, for the next opening). On the
Cloud API, outside the window, only FOLLOWUP_TEMPLATE may go, or nothing. At most FOLLOWUP_MAX per silence.
"""

import json
import logging
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone

import ai_service
import budget
import buffer
import channels
import chatlog
import cloud
import events
import hours
import memory
import shop_settings

log = logging.getLogger(__name__)

WINDOW_SECONDS = 23 * 3600  # WhatsApp's customer-service window is 24 h; never cut it close


def key(cid):
    return f"wa:followup:{cid}"


# KEYS: followup, due, burst, paused, optout, lock; ARGV: cid, at, fields JSON, keep_seconds
ARM_SCRIPT = """
if redis.call('ZSCORE', KEYS[2], ARGV[1]) or redis.call('LLEN', KEYS[3]) > 0 or redis.call('EXISTS', KEYS[4]) == 1
   or redis.call('EXISTS', KEYS[5]) == 1 or redis.call('EXISTS', KEYS[6]) == 1 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('DEL', KEYS[1])
local fields = {}
for name, value in pairs(cjson.decode(ARGV[3])) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
redis.call('HSET', KEYS[1], 'at', ARGV[2], 'sent', 0, unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""


def after_reply(redis, cid, reply, outcome, settings, now=None):
    """After a reply went out: arm the chat's follow-up (a Gemini answer, nothing waiting, no hold), else clear it."""
    if settings.followup_after_minutes <= 0:
        return False
    k = buffer.keys(cid)
    if outcome != "done" or reply.get("kind") != "gemini" or reply.get("hold") or not reply.get("sent"):
        redis.delete(k["followup"])
        return False
    now = time.time() if now is None else now
    fields = {"instance": reply["instance"], "reply_to": reply["reply_to"], "channel": reply.get("channel", "evolution"),
              "customer_at": repr(float(reply.get("asked_at") or reply.get("created") or now))}
    at = now + settings.followup_after_minutes * 60
    keep = int(settings.followup_after_minutes * 60 * max(settings.followup_max, 1) + 8 * 86400)
    return bool(redis.register_script(ARM_SCRIPT)(
        keys=[k["followup"], buffer.DUE, k["burst"], k["paused"], k["optout"], k["lock"]],
        args=[cid, repr(at), json.dumps(fields), keep]))


# KEYS: followup, lock, paused, optout, burst, inflight, reply, due, chat meta (chatlog)
# ARGV: token, cid, now, lease_seconds
CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'none'} end
local at = tonumber(redis.call('HGET', KEYS[1], 'at'))
local now = tonumber(ARGV[3])
if at > now then
  if not redis.call('ZSCORE', KEYS[8], ARGV[2]) then redis.call('ZADD', KEYS[8], at, ARGV[2]) end
  return {'wait'}
end
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 or redis.call('LLEN', KEYS[5]) > 0
   or redis.call('LLEN', KEYS[6]) > 0 or redis.call('EXISTS', KEYS[7]) == 1
   or redis.call('HGET', KEYS[9], 'last_from') ~= 'bot' or redis.call('HEXISTS', KEYS[1], 'sending') == 1 then
  redis.call('DEL', KEYS[1])  -- the customer wrote, a person holds the chat, or a job died sending it: never twice
  return {'cancelled'}
end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[4]) then return {'locked'} end
redis.call('HSET', KEYS[1], 'sending', 1)
redis.call('ZADD', KEYS[8], now + tonumber(ARGV[4]) + 1, ARGV[2])
return {'ready', unpack(redis.call('HGETALL', KEYS[1]))}
"""

# KEYS: followup, lock, due, burst, deadline, history; ARGV: token, cid, now, outcome ('sent' | 'later' | 'drop'),
#   next time ('' for none), model turn ('' for none), history args (3)
DONE_SCRIPT = memory.LUA_HISTORY + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[6] ~= '' then push_turn(KEYS[6], ARGV[6], cap(7)) end
redis.call('HDEL', KEYS[1], 'sending')
if ARGV[4] == 'sent' then redis.call('HINCRBY', KEYS[1], 'sent', 1) end
if ARGV[5] == '' then redis.call('DEL', KEYS[1]) else redis.call('HSET', KEYS[1], 'at', ARGV[5]) end
redis.call('DEL', KEYS[2])
if redis.call('LLEN', KEYS[4]) > 0 then  -- the customer wrote while it went out: their burst is answered as usual
  redis.call('DEL', KEYS[1])
  local deadline = math.max(tonumber(redis.call('GET', KEYS[5]) or '0'), tonumber(ARGV[3]))
  redis.call('ZADD', KEYS[3], deadline, ARGV[2])
elseif ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
else
  redis.call('ZREM', KEYS[3], ARGV[2])
end
return 1
"""


def run(ctx, cid, now=None):
    """The chat came due with nothing to answer: send its follow-up if one is due and still wanted.

    Returns what happened: none, wait, cancelled, locked, held (closed: waits for the opening),
    closed_window, sent, template, later (a send to retry) or dropped.
    """
    ctx = replace(ctx, settings=shop_settings.effective(ctx.redis, ctx.settings))  # the panel's hours, over .env's
    settings = ctx.settings
    now = time.time() if now is None else now
    k = buffer.keys(cid)
    token = uuid.uuid4().hex
    result = [v.decode() if isinstance(v, bytes) else v for v in ctx.redis.register_script(CLAIM_SCRIPT)(
        keys=[k["followup"], k["lock"], k["paused"], k["optout"], k["burst"], k["inflight"], k["reply"], buffer.DUE,
              chatlog.meta_key(cid)],
        args=[token, cid, repr(now), settings.job_lease_seconds])]
    if result[0] != "ready":
        if result[0] == "cancelled":
            log.info("chat %s: follow-up cancelled (the customer wrote, or a person holds the chat)", cid)
        return result[0]
    fu = dict(zip(result[1::2], result[2::2]))
    if settings.bot_paused:  # the owner's switch: nobody is nudged either
        _done(ctx, cid, token, now, "drop", "")
        log.info("chat %s: no follow-up: the bot is paused (BOT_PAUSED)", cid)
        return "dropped"
    sent = int(fu.get("sent") or 0)
    channel = fu.get("channel") or "evolution"
    in_window = now - float(fu["customer_at"]) < WINDOW_SECONDS
    again = repr(now + settings.followup_after_minutes * 60) if sent + 1 < settings.followup_max else ""

    if in_window and settings.business_hours.strip():
        opening = hours.next_opening(settings, datetime.fromtimestamp(now, timezone.utc))
        if opening is not None and opening.timestamp() > now + 1:
            _done(ctx, cid, token, now, "later", repr(opening.timestamp()))
            log.info("chat %s: follow-up held until the shop opens (%s)", cid, opening.isoformat(timespec="minutes"))
            return "held"
    if not in_window:
        if channel == cloud.NAME and settings.followup_template:
            return _send_template(ctx, cid, token, fu, now)
        _done(ctx, cid, token, now, "drop", "")
        log.info("chat %s: no follow-up: 23 h have passed since the customer's last message", cid)
        return "closed_window"

    text = compose(ctx, cid)
    if not text:
        _done(ctx, cid, token, now, "drop", "")
        return "dropped"
    rid = "fu" + token[:10]
    buffer.note_sending(ctx.redis, fu["instance"], cid, rid, text)
    try:
        message_id, _ = channels.send_text(ctx.session, settings, channel, fu["instance"], fu["reply_to"], text)
    except channels.Error as error:
        if not channels.maybe_sent(error):
            buffer.note_sent(ctx.redis, fu["instance"], cid, rid, text, None)
            if error.retryable and now - float(fu["at"]) < settings.send_retry_minutes * 60:
                log.warning("chat %s: follow-up not sent (%s); trying again", cid, error)
                _done(ctx, cid, token, now, "later", repr(now + min(settings.retry_base_seconds * 4, 60)))
                return "later"
            log.error("chat %s: follow-up not sent (%s); dropped", cid, error)
            _done(ctx, cid, token, now, "drop", "")
            return "dropped"
        log.warning("chat %s: %s; the follow-up may have gone out: counted as sent, never sent twice", cid, error)
        message_id = None
    else:
        buffer.note_sent(ctx.redis, fu["instance"], cid, rid, text, message_id)
    chatlog.record(ctx.redis, cid, chatlog.entry(message_id or rid, "bot", text, round(time.time(), 3), kind="followup"),
                   settings, lock_key=k["lock"], token=token)
    _done(ctx, cid, token, now, "sent", again, memory.turn("model", text))
    events.record(ctx.redis, settings, "followup.sent", cid, fu["instance"], channel, fu["reply_to"], text)
    log.info("chat %s: follow-up sent after %.1f min of silence", cid, settings.followup_after_minutes)
    return "sent"


def compose(ctx, cid):
    """FOLLOWUP_MESSAGE, or Gemini's nudge written from the conversation (FOLLOWUP_PROMPT); "" when none can be had."""
    settings = ctx.settings
    if settings.followup_message.strip():
        return settings.followup_message.strip()
    if not budget.allow(ctx.redis, settings):
        log.warning("chat %s: GEMINI_MAX_CALLS_PER_HOUR reached; no follow-up", cid)
        return ""
    instance = (chatlog.details(ctx.redis, cid) or {}).get("instance", "")
    try:
        return ai_service.generate_reply(ctx.genai, settings, memory.load_history(ctx.redis, cid),
                                         settings.followup_prompt, ai_service.load_system_prompt(settings, instance)).strip()
    except (ai_service.ReplyError, ai_service.Handoff) as error:
        log.warning("chat %s: no follow-up: Gemini gave none (%s)", cid, getattr(error, "reason", error))
        return ""


def _send_template(ctx, cid, token, fu, now):
    """Outside the window on the Cloud API: the approved FOLLOWUP_TEMPLATE (name:language), the only thing Meta allows."""
    settings = ctx.settings
    name, language = settings.followup_template.split(":", 1)
    try:
        message_id = cloud.send_template(ctx.session, settings, fu["instance"], fu["reply_to"], name, language)
    except cloud.CloudError as error:
        log.error("chat %s: follow-up template %s not sent: %s", cid, name, error)
        _done(ctx, cid, token, now, "drop", "")
        return "dropped"
    text = f"[modelo {name}]"
    chatlog.record(ctx.redis, cid, chatlog.entry(message_id or "fu" + token[:10], "bot", text, round(time.time(), 3),
                                                 kind="followup"), settings, lock_key=buffer.keys(cid)["lock"], token=token)
    _done(ctx, cid, token, now, "sent", "", memory.turn("model", text))  # a template closes the follow-ups
    events.record(ctx.redis, settings, "followup.sent", cid, fu["instance"], cloud.NAME, fu["reply_to"], text,
                  template=name)
    log.info("chat %s: follow-up sent as the template %s (outside the 24 h window)", cid, name)
    return "template"


def _done(ctx, cid, token, now, outcome, next_at, turn=""):
    k = buffer.keys(cid)
    return ctx.redis.register_script(DONE_SCRIPT)(
        keys=[k["followup"], k["lock"], buffer.DUE, k["burst"], k["deadline"], k["history"]],
        args=[token, cid, repr(now), outcome, next_at, turn, *memory.history_args(ctx.settings)])
