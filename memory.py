"""Conversation history per chat in Redis: capped and expiring, so a prompt cannot grow without bound.

Each turn is a JSON object `{"role": "user" | "model", "text": ...}` in a Redis list (a person's
answer is a model turn with `"by": "human"`). The merged burst is one user turn and the bot's answer
one model turn; while a person holds the chat, what the customer and the person write is kept too,
so the bot does not contradict the person when it resumes. Writes happen inside the Lua scripts of
buffer.py and chats.py (`LUA_HISTORY` below), only while the writer still holds the chat.
"""

import json

# Lua helpers shared by the scripts that write history. `cap(i)` reads the three history arguments
# (history_args) from ARGV[i]; `push_turn` appends one JSON turn; `push_entries` appends the
# customer's buffered messages (burst entries) as user turns.
#
# Past HISTORY_MAX_TURNS exchanges or HISTORY_MAX_CHARS (counted as stored, in UTF-8 bytes), the
# oldest turns go in one block, down to half of the cap, and never so that history starts with the
# shop's turn: the prompt then starts the same way for several turns and Gemini's implicit context
# cache can serve it, where trimming one exchange per turn would change it every time.
LUA_HISTORY = """
local function cap(i)
  return {turns = 2 * tonumber(ARGV[i]), chars = tonumber(ARGV[i + 1]), ttl = ARGV[i + 2]}
end
local function push_turn(key, turn, limit)
  local count = redis.call('RPUSH', key, turn)
  redis.call('EXPIRE', key, limit.ttl)
  local turns = redis.call('LRANGE', key, 0, -1)
  local size = 0
  for _, t in ipairs(turns) do size = size + #t end
  if count <= limit.turns and size <= limit.chars then return end
  local drop = 0
  while drop < count - 1 and (count - drop > limit.turns / 2 or size > limit.chars / 2) do
    drop = drop + 1
    size = size - #turns[drop]
  end
  local cut = drop
  while cut < count and cjson.decode(turns[cut + 1]).role ~= 'user' do cut = cut + 1 end
  if cut == count then  -- only the shop's turns after the cut: keep the last exchange whole
    cut = drop
    while cut > 0 and cjson.decode(turns[cut + 1]).role ~= 'user' do cut = cut - 1 end
  end
  redis.call('LTRIM', key, cut, -1)
end
local function push_entries(key, list, limit)
  for _, raw in ipairs(redis.call('LRANGE', list, 0, -1)) do
    local entry = cjson.decode(raw)
    local text = entry.text
    if text == nil or text == '' then text = '[' .. tostring(entry.kind) .. ']' end
    push_turn(key, cjson.encode({role = 'user', text = text}), limit)
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
    """The caps and expiry the Lua helpers take (`cap(i)`), in the order they take them."""
    return [settings.history_max_turns, settings.history_max_chars, settings.history_ttl_seconds]

