"""A chat's state as people see it, and what a person does to it: take over, hand back, stop, forget.

A person always wins over the bot. Whatever a person does in a chat (answering from the phone,
WhatsApp Web, Chatwoot or the panel; `#parar`; `#bot`) is one Lua script that also voids what a
running job holds (its lock and stored reply), so that job never sends or writes anything after
the person acted. What the customer wrote and what the person answered go into the chat's history,
so the bot does not contradict the person when it resumes.
"""

import logging
import re
import time

import redis as redis_lib

import attention
import buffer
import chatlog
import memory

log = logging.getLogger(__name__)

# The per-chat keys a person's action touches, in the order the scripts receive them.
CHAT_KEYS = ("paused", "optout", "lock", "reply", "inflight", "burst", "deadline", "started", "attempts",
             "regenerated", "history", "media")

_LUA_ACT = memory.LUA_HISTORY + attention.LUA_ANSWERED + """
local function chat_keys(offset)
  local K = {}
  for i, name in ipairs({%s}) do K[name] = KEYS[offset + i] end
  return K
end
-- A person acts: 'resume' turns the bot back on; 'pause' and 'stop' void what a job holds and keep
-- what was waiting (and what the bot had already sent of its reply) in history for the bot's next turn.
local function act(K, due, action, pause_seconds, cid, human_turn, limit)
  if action == 'resume' or human_turn ~= '' then person_answered(cid) end  -- the panel's "Precisa de você" ends
  if action == 'resume' then
    redis.call('DEL', K.paused, K.optout)
    return 'resumed'
  end
  push_entries(K.history, K.inflight, limit)
  local stored = redis.call('GET', K.reply)
  if stored then
    local reply = cjson.decode(stored)
    local sent = tonumber(reply.sent) or 0
    if sent > 0 then
      local said = {}
      for i = 1, sent do said[i] = reply.parts[i] end
      push_turn(K.history, cjson.encode({role = 'model', text = table.concat(said, '\\n\\n')}), limit)
    end
  end
  push_entries(K.history, K.burst, limit)
  if human_turn ~= '' then push_turn(K.history, human_turn, limit) end
  redis.call('DEL', K.lock, K.reply, K.inflight, K.burst, K.deadline, K.started, K.attempts, K.regenerated, K.media)
  redis.call('ZREM', due, cid)
  if action == 'stop' or redis.call('GET', K.paused) == 'stop' then
    redis.call('SET', K.paused, 'stop')
    return 'stopped'
  end
  redis.call('SET', K.paused, 'human', 'EX', pause_seconds)
  return 'paused'
end
""" % ", ".join(f"'{name}'" for name in CHAT_KEYS)

# KEYS: due, chat keys...; ARGV: action, pause_seconds, cid, history args (3)
ACT_SCRIPT = _LUA_ACT + """
return act(chat_keys(1), KEYS[1], ARGV[1], ARGV[2], ARGV[3], '', cap(4))
"""

# KEYS: seen, ours, sending, due, chat keys...
# ARGV: action, pause_seconds, cid, history args (3), dedupe_ttl, digest, human turn
FROM_ME_SCRIPT = _LUA_ACT + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[7]) then return 'duplicate' end
local owner = redis.call('GET', KEYS[2])  -- our send, by the id sendText answered
if not owner then owner = redis.call('LINDEX', KEYS[3], 0) end  -- ...or by its text, before the id is known
if owner then
  local cid, rid = string.match(owner, '^(%S+) (%S+)$')
  local delivered = 'wa:delivered:' .. cid
  redis.call('HINCRBY', delivered, rid .. ':' .. ARGV[8], 1)
  redis.call('EXPIRE', delivered, 86400)
  return 'own'
end
return act(chat_keys(4), KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[9], cap(4))
"""


def _chat_keys(cid):
    k = buffer.keys(cid)
    return [k[name] for name in CHAT_KEYS]


def _run(redis, source, keys, args):
    result = redis.register_script(source)(keys=keys, args=args)
    return result.decode() if isinstance(result, bytes) else result


def note_from_me(redis, message, settings):
    """A `fromMe` message: our own echo, or a person answering (or an owner command) in the chat.

    Returns duplicate, own, resumed, stopped or paused. A person's answer pauses the bot for
    HANDOFF_PAUSE_MINUTES (a `#parar` stays until `#bot`), voids a running job, and is kept in history.
    """
    cid = buffer.chat_ref(message.instance, message.chat_id, message.channel)
    text = message.text.strip()
    action, human_turn = "pause", memory.turn("model", text or f"[{message.kind}]", by="human")
    if settings.resume_keyword and text.lower() == settings.resume_keyword.lower():
        action, human_turn = "resume", ""
    elif settings.stop_keyword and text.lower() == settings.stop_keyword.lower():
        action, human_turn = "stop", ""
    return _run(redis, FROM_ME_SCRIPT,
                [buffer.seen_key(message.instance, message.message_id),
                 buffer.own_send_key(message.instance, message.message_id),
                 buffer.sending_key(message.instance, message.text), buffer.DUE, *_chat_keys(cid)],
                [action, _pause_seconds(settings), cid, *memory.history_args(settings), settings.dedupe_ttl_seconds,
                 buffer.text_digest(message.text), human_turn])


def _pause_seconds(settings):
    return max(int(settings.handoff_pause_minutes * 60), 1)


def _act(redis, cid, action, settings):
    return _run(redis, ACT_SCRIPT, [buffer.DUE, *_chat_keys(cid)],
                [action, _pause_seconds(settings), cid, *memory.history_args(settings)])


def take_over(redis, cid, settings):
    """A person takes the chat (the panel's button): the bot pauses for HANDOFF_PAUSE_MINUTES, a running job is void."""
    return _act(redis, cid, "pause", settings)


def hand_back(redis, cid, settings):
    """The bot answers this chat again: ends a pause, a stop and the customer's opt-out alike."""
    return _act(redis, cid, "resume", settings)


def stop(redis, cid, settings):
    """The bot stays quiet in this chat until someone hands it back."""
    return _act(redis, cid, "stop", settings)


def owner_command(redis, message, settings):
    """`#parar 5511…`, `#pausar 5511…` or `#bot 5511…` in the shop's own "message yourself" chat: act on
    that customer's chat (every form of the number), which never sees the command. Applied once per message id."""
    words = message.text.split()
    actions = {settings.resume_keyword.lower(): "resume", settings.stop_keyword.lower(): "stop",
               settings.pause_keyword.lower(): "pause"}
    action = actions.get(words[0].lower()) if len(words) > 1 else None
    if action is None:
        return "ignored"
    if not redis.set(buffer.seen_key(message.instance, message.message_id), 1, nx=True, ex=settings.dedupe_ttl_seconds):
        return "duplicate"
    outcomes = {_act(redis, buffer.chat_ref(message.instance, jid), action, settings)
                for jid in customer_jids(" ".join(words[1:]))}
    return outcomes.pop() if len(outcomes) == 1 else "stopped" if "stopped" in outcomes else "paused"


def state(redis, cid, now=None):
    """What the chat is doing: waiting (a burst pending until `until`), answering, paused (until), stopped or idle."""
    now = time.time() if now is None else now
    k = buffer.keys(cid)
    pipe = redis.pipeline(transaction=False)
    pipe.get(k["paused"])
    pipe.pttl(k["paused"])
    pipe.pttl(k["optout"])
    pipe.exists(k["lock"])
    pipe.zscore(buffer.DUE, cid)
    pipe.get(k["deadline"])
    paused, paused_ms, optout_ms, locked, due, deadline = pipe.execute()
    if paused == b"stop":
        return {"state": "stopped", "until": None}
    if optout_ms and optout_ms > 0:
        return {"state": "stopped", "until": now + optout_ms / 1000}
    if paused is not None:
        return {"state": "paused", "until": now + paused_ms / 1000 if paused_ms and paused_ms > 0 else None}
    if locked:
        return {"state": "answering", "until": None}
    if due is not None:
        return {"state": "waiting", "until": float(deadline) if deadline else due}
    return {"state": "idle", "until": None}


def forget(redis, cid):
    """Erase everything kept about one chat (LGPD), also from the disk. Returns how many keys were deleted.

    A job sending to that chat at this moment loses its lock with the rest, so it sends and writes nothing more.
    """
    deleted = _erase(redis, cid)
    rewrite_aof(redis)
    return deleted


def _erase(redis, cid):
    pipe = redis.pipeline()
    pipe.delete(*buffer.keys(cid).values())
    pipe.zrem(buffer.DUE, cid)
    chatlog.erase(pipe, cid)  # the panel's conversation log and chat details
    attention.erase(pipe, cid)  # the panel's "Precisa de você" and search
    return pipe.execute()[0]


def rewrite_aof(redis):
    """Have Redis rewrite its append-only file, so erased text leaves the disk too (not only memory)."""
    try:
        redis.bgrewriteaof()
    except redis_lib.ResponseError as error:  # one already running: Redis schedules another after it
        log.info("AOF rewrite not started now: %s", error)


def customer_jids(written):
    """Every JID a customer may be kept under, however the number is written: `+55 85 9 9999-9913`,
    with or without Brazil's ninth digit, or a JID as given ('@lid' included)."""
    if "@" in written:
        return [written.strip()]
    digits = re.sub(r"\D", "", written)
    forms = {digits}
    if digits.startswith("55") and len(digits) == 13 and digits[4] == "9":
        forms.add(digits[:4] + digits[5:])  # WhatsApp drops the ninth digit of older accounts
    elif digits.startswith("55") and len(digits) == 12:
        forms.add(digits[:4] + "9" + digits[4:])
    return [f"{form}@s.whatsapp.net" for form in sorted(forms) if form]


def forget_customer(redis, instance, written):
    """`worker.py forget`: erase the customer on `instance` (a name, or several) under every form of their number,
    and under the '@lid' JID their phone JID was seen with, whichever channel the instance is on (an Evolution
    instance, a Cloud API phone_number_id, a Twilio number)."""
    import channels

    names = [instance] if isinstance(instance, str) else list(instance)
    deleted = 0
    for name in names:
        for jid in customer_jids(written):
            lid = redis.getdel(buffer.lid_key(name, jid))  # the same customer under '@lid' addressing
            if lid:
                deleted += 1 + _erase(redis, buffer.chat_ref(name, lid.decode()))
            deleted += sum(_erase(redis, buffer.chat_ref(name, jid, channel)) for channel in channels.MODULES)
    rewrite_aof(redis)
    return deleted
