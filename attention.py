"""Which chats need a person now: the panel's "Precisa de você".

A chat needs a person from the moment its customer asks for one (a handoff phrase or Gemini's
transfer tool), asks the bot to stop, or writes while a person holds or stopped the chat, until a
person answers (phone, WhatsApp Web, Chatwoot, the panel) or hands the chat back to the bot. The
bot's pause running out does not end it: the customer is still waiting. Kept in two keys, so the
inbox finds these chats without looking at every chat: a sorted set (chat -> since when) and a
hash (chat -> why). The first reason and time stay until the chat is answered.
"""

import time

NEEDS = "wa:needs_person"  # sorted set: cid -> since (unix time)
WHY = "wa:needs_person:why"  # hash: cid -> reason, as the panel shows it
SEARCH = "wa:inbox:find"  # hash: cid -> what the inbox's search looks in (panel/search.py), erased with the chat

ASKED = "pediu uma pessoa"
WROTE = "escreveu enquanto pausado"
OPTED_OUT = "pediu para sair"

# Lua: a person acted in chat `cid` (answered, or handed it back to the bot).
LUA_ANSWERED = f"""
local function person_answered(cid)
  redis.call('ZREM', '{NEEDS}', cid)
  redis.call('HDEL', '{WHY}', cid)
end
"""


def flag(redis, cid, reason, now=None):
    """The chat needs a person, from `now`, for `reason`; an earlier flag keeps its time and reason."""
    pipe = redis.pipeline()
    pipe.zadd(NEEDS, {cid: time.time() if now is None else now}, nx=True)
    pipe.hsetnx(WHY, cid, reason)
    pipe.execute()


def clear(pipe, cid):
    """Queue on `pipe` (or run on a client) the end of the chat's need: answered, handed back, or erased."""
    pipe.zrem(NEEDS, cid)
    pipe.hdel(WHY, cid)


def erase(pipe, cid):
    """Queue on `pipe` everything kept here about the chat (LGPD, with forget)."""
    clear(pipe, cid)
    pipe.hdel(SEARCH, cid)


def waiting(redis, cids):
    """{cid: (since, reason)} for those of `cids` that need a person."""
    pipe = redis.pipeline(transaction=False)
    for cid in cids:
        pipe.zscore(NEEDS, cid)
        pipe.hget(WHY, cid)
    found = pipe.execute() if cids else []
    return {cid: (since, (why or b"").decode()) for cid, since, why in zip(cids, found[::2], found[1::2])
            if since is not None}
