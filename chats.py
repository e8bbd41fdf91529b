"""A chat's state as people see it, and what a person does to it: take over, hand back, stop, forget.

A person always wins over the bot. Whatever a person does in a chat (answering from the phone,
WhatsApp Web, Chatwoot or the panel; `#parar`; `#bot`) is one Lua script that also voids what a
running job holds (its lock and stored reply), so that job never sends or writes anything after
the person acted. What the customer wrote and what the person answered go into the chat's history,
so the bot does not contradict the person when it resumes.
"""

import json
import logging
import re
import secrets
import time

import redis as redis_lib

import buffer
import chatlog
import memory

log = logging.getLogger(__name__)

# The per-chat keys a person's action touches, in the order the scripts receive them.
CHAT_KEYS = ("paused", "optout", "lock", "reply", "inflight", "burst", "deadline", "started", "attempts",
             "regenerated", "history", "media", "taken", "followup")

_LUA_ACT = memory.LUA_HISTORY + """
local function chat_keys(offset)
  local K = {}
  for i, name in ipairs({%s}) do K[name] = KEYS[offset + i] end
  return K
end
-- A person acts: 'resume' turns the bot back on; 'pause' and 'stop' void what a job holds and keep
-- what was waiting (and what the bot had already sent of its reply) in history for the bot's next turn.
local function act(K, due, action, pause_seconds, cid, human_turn, limit)
  if action == 'resume' then
    redis.call('DEL', K.paused, K.optout)
    return 'resumed'
  end
  push_entries(K.history, K.inflight, limit)
  local stored = redis.call('GET', K.reply)
  if stored then
    local reply = cjson.decode(stored)
    local sent = tonumber(reply.sent) or 0
    if tonumber(reply.attempt) and tonumber(reply.attempt) >= sent then
      sent = tonumber(reply.attempt) + 1  -- the part on its way reaches the customer: history has it too
    end
    if sent > 0 then
      local said = {}
      for i = 1, sent do said[i] = reply.parts[i] end
      push_turn(K.history, cjson.encode({role = 'model', text = table.concat(said, '\\n\\n')}), limit)
    end
  end
  push_entries(K.history, K.burst, limit)
  if human_turn ~= '' then push_turn(K.history, human_turn, limit) end
  redis.call('DEL', K.lock, K.reply, K.inflight, K.burst, K.deadline, K.started, K.attempts, K.regenerated, K.media,
             K.taken, K.followup)  -- followup: a person acted, so no follow-up after silence (followup.py)
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
    try:
        result = redis.register_script(source)(keys=keys, args=args)
    except redis_lib.OutOfMemoryError:
        # Redis is at its maxmemory: a person's action still goes through (a few hundred bytes past the
        # limit), so the bot never answers over a person when memory runs out. Redis >= 7 reads the flag.
        log.warning("Redis is full: a person's action is written past maxmemory")
        result = redis.register_script("#!lua flags=allow-oom\n" + source)(keys=keys, args=args)
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


# KEYS: sending, seen, history; ARGV: entry, dedupe_ttl, human turn, history args (3)
ANSWERED_SCRIPT = memory.LUA_HISTORY + """
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])  -- its echo, from now on, is a duplicate (before, it was ours)
push_turn(KEYS[3], ARGV[3], cap(4))
return 1
"""


def answer_as_person(redis, session, settings, cid, meta, text):
    """The panel's answer: sent through the chat's channel and kept in history once, on every channel.

    The Cloud API and Twilio never echo it, so it is written here; Evolution's echo (before or after
    sendText answers) is then known as this answer, not a second one. Returns (message id, its time).
    """
    import channels

    instance, entry = meta.get("instance", ""), f"{cid} human"
    sending = buffer.sending_key(instance, text)
    pipe = redis.pipeline()
    pipe.rpush(sending, entry)  # an echo before the id is known: ours (see FROM_ME_SCRIPT), nothing written
    pipe.expire(sending, 3600)
    pipe.execute()
    try:
        message_id, at = channels.send_text(session, settings, meta.get("channel", "evolution"), instance,
                                            meta["reply_to"], text)
    except channels.Error:
        redis.lrem(sending, 0, entry)
        raise
    message_id = message_id or f"panel-{secrets.token_hex(8)}"
    _run(redis, ANSWERED_SCRIPT, [sending, buffer.seen_key(instance, message_id), buffer.keys(cid)["history"]],
         [entry, settings.dedupe_ttl_seconds, memory.turn("model", text, by="human"), *memory.history_args(settings)])
    chatlog.record(redis, cid, chatlog.entry(message_id, "human", text, at), settings)
    return message_id, at


# KEYS: log, meta, chats, paused, optout; ARGV: cid, '', log args (7)
HELD_LOG_SCRIPT = chatlog.LUA_LOG + """
if redis.call('EXISTS', KEYS[4]) == 0 and redis.call('EXISTS', KEYS[5]) == 0 then return 0 end
log_entry(KEYS, ARGV[1], 3)
return 1
"""


def record_part_in_flight(redis, cid, message_id, text, settings):
    """A part of the bot's reply that went out after a person took the chat over: the customer has it, so the
    panel's thread shows it (history already does, see `act`). Never for an erased chat: only while it is held."""
    k = buffer.keys(cid)
    item = chatlog.entry(message_id, "bot", text, time.time())
    return bool(_run(redis, HELD_LOG_SCRIPT, [*chatlog.log_keys(cid), k["paused"], k["optout"]],
                     [cid, "", *chatlog.log_args(item, settings)]))


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
    """`#parar 11 98765-0702`, `#pausar …` or `#bot …` in the shop's own "message yourself" chat: act on that
    customer's chat (every form of the number), which never sees the command. Applied once per message id.

    Returns (outcome, notice): the one line in Portuguese that confirms it in the self-chat (None when there is
    nothing to say), and "not_found" when the number names no customer the bot knows, or more than one.
    """
    words = message.text.split()
    actions = {settings.resume_keyword.lower(): "resume", settings.stop_keyword.lower(): "stop",
               settings.pause_keyword.lower(): "pause"}
    action = actions.get(words[0].lower()) if len(words) > 1 else None
    if action is None:
        return "ignored", None
    if not redis.set(buffer.seen_key(message.instance, message.message_id), 1, nx=True, ex=settings.dedupe_ttl_seconds):
        return "duplicate", None
    written = " ".join(words[1:])
    jids, known = find_customer(redis, message.instance, written)
    if not jids:
        return "not_found", (f"❓ Não encontrei esse cliente ({written}): nenhum ou mais de um cliente tem esse "
                             f"número. Escreva com o DDD, como em {words[0]} 11 91234-5678.")
    outcomes = {_act(redis, buffer.chat_ref(message.instance, jid), action, settings) for jid in jids}
    outcome = outcomes.pop() if len(outcomes) == 1 else "stopped" if "stopped" in outcomes else "paused"
    who = shown_number(max(jids, key=len))
    notice = {"resumed": f"✅ O bot voltou a responder {who}.",
              "stopped": f"✅ O bot parou de responder {who} até você escrever {settings.resume_keyword} {who}.",
              "paused": f"✅ O bot pausou {who} por {settings.handoff_pause_minutes:g} min."}[outcome]
    if not known:
        notice += " Não encontrei esse cliente nas conversas: vale quando ele escrever."
    return outcome, notice


def find_customer(redis, instance, written):
    """The JIDs of the customer a number names on `instance`, written the way Brazilians write it: with or without
    +55, the area code, the ninth digit, spaces and dashes. Returns (jids, known).

    A number with its area code names one customer even before they write (known is then False when the bot has
    no chat with them); a number without it must match exactly one customer the bot knows. ([], False) otherwise.
    """
    if "@" in written:
        return [written.strip()], True
    digits = re.sub(r"\D", "", written).lstrip("0")  # "0 11 …": the long-distance prefix
    if len(digits) in (10, 11):
        digits = "55" + digits
    if len(digits) in (12, 13) and digits.startswith("55"):
        jids = customer_jids(digits)
        pipe = redis.pipeline(transaction=False)
        for jid in jids:
            pipe.exists(chatlog.meta_key(buffer.chat_ref(instance, jid)))
        return jids, any(pipe.execute())
    if len(digits) not in (8, 9):
        return [], False
    local = digits[-8:]  # the ninth digit aside, the last eight identify the line within an area code
    found = set()
    for chat in chatlog.chats(redis, limit=100_000):
        number = re.sub(r"\D", "", chat.get("reply_to", ""))
        if chat.get("instance") == instance and number.startswith("55") and len(number) in (12, 13) \
                and number[-8:] == local and (len(digits) == 8 or len(number) == 12 or number[-9] == digits[0]):
            found.add(number[:4] + number[-8:])  # one customer, with or without the ninth digit
    if len(found) != 1:
        return [], False
    return customer_jids(found.pop()), True


def shown_number(jid):
    """A JID's number as a person writes it: +55 11 98765-0702."""
    d = jid.split("@")[0]
    if not (d.startswith("55") and len(d) in (12, 13)):
        return d
    return f"+{d[:2]} {d[2:4]} {d[4:-4]}-{d[-4:]}"


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
    """Erase the customer of chat `cid` (the panel's "Apagar cliente"): the same erasure as `worker.py forget`,
    under every form of their number and their '@lid' JID, also from the disk. Returns how many keys were deleted.

    A job sending to that chat at this moment loses its lock with the rest, so it sends and writes nothing more.
    """
    meta = chatlog.details(redis, cid) or {}
    deleted = _erase(redis, cid, meta.get("instance"))
    if meta.get("instance"):
        written = {meta.get("chat_id"), meta.get("reply_to")} - {None, ""}
        deleted += sum(_forget(redis, [meta["instance"]], number) for number in written)
    rewrite_aof(redis)
    return deleted


def _erase(redis, cid, instance=None):
    """Delete one chat's keys, its panel log, and the ids of our sends to it (each names the chat)."""
    k = buffer.keys(cid)
    pipe = redis.pipeline(transaction=False)
    pipe.hget(chatlog.meta_key(cid), "instance")
    pipe.zrange(chatlog.log_key(cid), 0, -1)
    pipe.get(k["reply"])
    known, logged, stored = pipe.execute()
    instance = known.decode() if known else instance
    ids = {json.loads(item).get("id") for item in logged}
    ids.update(json.loads(stored).get("ids") or [] if stored else [])
    ours = [buffer.own_send_key(instance, message_id) for message_id in ids if message_id and instance]
    pipe = redis.pipeline()
    pipe.delete(*k.values(), *ours)
    pipe.zrem(buffer.DUE, cid)
    chatlog.erase(pipe, cid)  # the panel's conversation log and chat details
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
    names = [instance] if isinstance(instance, str) else list(instance)
    deleted = _forget(redis, names, written)
    rewrite_aof(redis)
    return deleted


def _forget(redis, names, written):
    import channels

    deleted = 0
    for name in names:
        for jid in customer_jids(written):
            lid = redis.getdel(buffer.lid_key(name, jid))  # the same customer under '@lid' addressing
            if lid:
                deleted += 1 + _erase(redis, buffer.chat_ref(name, lid.decode()), name)
            deleted += sum(_erase(redis, buffer.chat_ref(name, jid, channel), name) for channel in channels.MODULES)
    return deleted
