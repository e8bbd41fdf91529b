"""Conversation history per chat in Redis: capped and expiring, so a prompt cannot grow without bound.

Each turn is a JSON object `{"role": "user" | "model", "text": ...}` in a Redis list (a person's
answer is a model turn with `"by": "human"`). The merged burst is one user turn and the bot's answer
one model turn; while a person holds the chat, what the customer and the person write is kept too,
so the bot does not contradict the person when it resumes. Writes happen inside the Lua scripts of
buffer.py and chats.py (`LUA_HISTORY` below), only while the writer still holds the chat.
"""

import json

# Lua helpers shared by the scripts that write history. `push_turn` appends one JSON turn;
# `push_entries` appends the customer's buffered messages (burst entries) as user turns.
LUA_HISTORY = """
local function push_turn(key, turn, max_turns, ttl)
  redis.call('RPUSH', key, turn)
  redis.call('LTRIM', key, -2 * tonumber(max_turns), -1)
  redis.call('EXPIRE', key, ttl)
end
local function push_entries(key, list, max_turns, ttl)
  for _, raw in ipairs(redis.call('LRANGE', list, 0, -1)) do
    local entry = cjson.decode(raw)
    local text = entry.text
    if text == nil or text == '' then text = '[' .. tostring(entry.kind) .. ']' end
    push_turn(key, cjson.encode({role = 'user', text = text}), max_turns, ttl)
  end
end
"""


def key(cid):
    return f"wa:history:{cid}"


def load_history(redis, cid):
    """The chat's turns, oldest first."""
    return [json.loads(turn) for turn in redis.lrange(key(cid), 0, -1)]


def turn(role, text, **extra):
    """One history turn as stored."""
    return json.dumps({"role": role, "text": text, **extra}, ensure_ascii=False)


def history_args(settings):
    """The cap and expiry the Lua helpers take, in the order they take them."""
    return [settings.history_max_turns, settings.history_ttl_seconds]


def append_exchange(pipe, cid, user_text, reply_text, settings):
    """Queue on `pipe` the user turn and the model turn, trimmed to HISTORY_MAX_TURNS exchanges (bench/ uses it)."""
    pipe.rpush(key(cid), turn("user", user_text), turn("model", reply_text))
    pipe.ltrim(key(cid), -2 * settings.history_max_turns, -1)
    pipe.expire(key(cid), settings.history_ttl_seconds)
