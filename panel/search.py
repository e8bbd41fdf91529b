"""Finding chats for the inbox at any size: search, a state filter, and pages "mais antigas" by cursor.

The chat index (memory.CHATS, by last activity) and the set of chats that need a person
(attention.NEEDS) are walked inside Redis by one Lua script, so a call costs one round trip
whatever the number of chats: a chat's state is read only when filtering by state (one EXISTS for
most chats). A search reads one hash (attention.SEARCH: each chat's name, number digits and last
text, lowercased without accents), made again only for the chats active since the last search
(by the index's scores), and emptied of chats that left the index. The chats that need a person
come first, then every other chat, each group newest first. A cursor is where the last page ended
(group, score, chat id), so new chats arriving meanwhile shift nothing.
"""

import re
import unicodedata

import attention
import buffer
import memory

CHATS = memory.CHATS  # the chat index, by last activity

STATES = ("needs_person", "waiting", "answering", "paused", "stopped", "idle")
MAX_LIMIT = 200
CURSOR = re.compile(r"([01]):(-?[0-9][0-9.e+-]*):([0-9a-f]{20})")  # as find takes and gives it (a Redis ref)
PUBLIC_CURSOR = re.compile(r"([01]):(-?[0-9][0-9.e+-]*):([0-9a-f]{24})")  # as the panel shows it (a keyed id)
CHUNK = 2000  # chats read from the index at a time


def fold(text):
    """Lowercase without accents ("João" -> "joao"): how both the search and what it searches are compared."""
    return "".join(c for c in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(c))


def _lua_fold_table():
    """The same folding in Lua, for UTF-8's two-byte Latin letters (À..ÿ): {"\\195\\160" = "a", ...}."""
    pairs = []
    for code in range(0xC0, 0x100):
        plain = fold(chr(code))
        if plain.isascii() and plain.isalpha():
            first, second = chr(code).encode()
            pairs.append(f'["\\{first}\\{second}"] = "{plain}"')
    return "{" + ", ".join(pairs) + "}"


# KEYS: chat index, needs-person set, due set, search cache, the index score the cache is made up to
# ARGV: search terms (folded, space-separated), state, after group, after score, after cid, limit, then the key prefixes of
#       a chat's details, pause, opt-out and lock, the needs-person reasons' hash, the prefix of a chat's record
FIND_SCRIPT = """
local FOLD = %s
local want = ARGV[2]
local terms = {}
for term in string.gmatch(ARGV[1], '%%S+') do terms[#terms + 1] = term end
local after_group, after_score, after_cid = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local limit = tonumber(ARGV[6])
local meta, paused, optout, lock, record = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[12]

local function fold(s) return (string.gsub(string.lower(s), '\\195[\\128-\\191]', FOLD)) end
local due = {}
if want ~= '' and want ~= 'needs_person' then
  for _, cid in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do due[cid] = true end
end
local function bot_state(cid)  -- as chats.state says it, with one EXISTS for a chat nobody holds
  if redis.call('EXISTS', paused .. cid, optout .. cid, lock .. cid) == 0 then
    if due[cid] then return 'waiting' end
    return 'idle'
  end
  local p = redis.call('GET', paused .. cid)
  if p == 'stop' or redis.call('EXISTS', optout .. cid) == 1 then return 'stopped' end
  if p then return 'paused' end
  return 'answering'
end
local hit = {}
if #terms > 0 then  -- the search cache: folded name, number's digits, last text per chat; chats active lately made again
  local since = tonumber(redis.call('GET', KEYS[5]) or '0')
  local top = since
  local fresh = redis.call('ZRANGEBYSCORE', KEYS[1], since - 300, '+inf', 'WITHSCORES')  -- 300 s: late deliveries
  for i = 1, #fresh, 2 do
    local d = redis.call('HMGET', meta .. fresh[i], 'name', 'reply_to')
    local last = redis.call('LINDEX', record .. fresh[i], -1)  -- the chat's last message
    local ok, entry = pcall(cjson.decode, last or '')
    local text = ok and type(entry) == 'table' and type(entry.text) == 'string' and entry.text or ''
    redis.call('HSET', KEYS[4], fresh[i],
               fold((d[1] or '') .. '\\n' .. (string.gsub(d[2] or '', '%%D', '')) .. '\\n' .. text))
    top = math.max(top, tonumber(fresh[i + 1]))
  end
  redis.call('SET', KEYS[5], tostring(top))
  local flat = redis.call('HGETALL', KEYS[4])
  for i = 1, #flat, 2 do
    local found = true
    for _, term in ipairs(terms) do
      if not string.find(flat[i + 1], term, 1, true) then found = false break end
    end
    if found then hit[flat[i]] = true end
  end
  if #flat / 2 > redis.call('ZCARD', KEYS[1]) then  -- chats left the index (expired): their text leaves the cache
    for i = 1, #flat, 2 do
      if not redis.call('ZSCORE', KEYS[1], flat[i]) then redis.call('HDEL', KEYS[4], flat[i]) end
    end
  end
end
local function wanted(cid, group)
  if want == 'needs_person' and group == 1 then return false end
  if #terms > 0 and not hit[cid] then return false end
  if want ~= '' and want ~= 'needs_person' and (group == 0 or bot_state(cid) ~= want) then return false end
  return true
end
local function past_cursor(group, score, cid)
  if after_cid == '' or group > after_group then return true end
  if group < after_group then return false end
  return score < after_score or (score == after_score and cid < after_cid)
end

local total, page, full = 0, {}, false
local filtered = #terms > 0 or want ~= ''
local function consider(cid, group, score)
  if not wanted(cid, group) then return end
  total = total + 1
  if not full and past_cursor(group, tonumber(score), cid) then
    page[#page + 1] = {cid, group, score}
    full = #page > limit
  end
end

local needs = {}
local pinned = {}
for _, cid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local score = redis.call('ZSCORE', KEYS[1], cid)
  if score then
    needs[cid] = true
    pinned[#pinned + 1] = {cid, score}
  else  -- the chat left the index (its log expired): nobody is waiting there any more
    redis.call('ZREM', KEYS[2], cid)
    redis.call('HDEL', ARGV[11], cid)
  end
end
table.sort(pinned, function(a, b)
  local x, y = tonumber(a[2]), tonumber(b[2])
  if x ~= y then return x > y end
  return a[1] > b[1]
end)
for _, item in ipairs(pinned) do consider(item[1], 0, item[2]) end
if want ~= 'needs_person' then
  local start = 0
  while true do
    local chunk = redis.call('ZREVRANGE', KEYS[1], start, start + %d - 1, 'WITHSCORES')
    for i = 1, #chunk, 2 do
      if not needs[chunk[i]] then consider(chunk[i], 1, chunk[i + 1]) end
    end
    if #chunk < 2 * %d or (full and not filtered) then break end
    start = start + %d
  end
  if not filtered then total = redis.call('ZCARD', KEYS[1]) end
end
local out = {total, #pinned}
for _, item in ipairs(page) do
  out[#out + 1] = item[1]
  out[#out + 1] = tostring(item[2])
  out[#out + 1] = item[3]
end
return out
""" % (_lua_fold_table(), CHUNK, CHUNK, CHUNK)


class BadQuery(ValueError):
    """A filter or cursor the inbox does not know; its text is for the owner (Portuguese)."""


def parse(args):
    """q, state, cursor and limit from a request's query string; BadQuery when one is wrong."""
    q = (args.get("q") or "").strip()[:100]
    state = args.get("state") or ""
    if state and state not in STATES:
        raise BadQuery(f"Filtro desconhecido: {state[:30]}. Use um destes: {', '.join(STATES)}.")
    cursor = args.get("cursor") or ""
    if cursor and not PUBLIC_CURSOR.fullmatch(cursor):
        raise BadQuery("Marcador de página inválido. Recarregue a lista de conversas.")
    try:
        limit = min(max(int(args.get("limit") or 50), 1), MAX_LIMIT)
    except ValueError:
        raise BadQuery(f"O limite (limit) deve ser um número de 1 a {MAX_LIMIT}.") from None
    return q, state, cursor, limit


def find(redis, q="", state="", cursor="", limit=50):
    """One page of chat ids, newest first with those needing a person first.

    Returns (ids, how many match, the next page's cursor or None, how many chats need a person).
    """
    terms = re.sub(r"\D", "", q) if re.fullmatch(r"[\d\s()+.-]+", q) else fold(q)  # a number: its digits
    after = CURSOR.fullmatch(cursor).groups() if cursor else ("0", "0", "")
    prefixes = buffer.keys("")
    found = redis.register_script(FIND_SCRIPT)(
        keys=[CHATS, attention.NEEDS, buffer.DUE, attention.SEARCH, attention.SEARCH + ":at"],
        args=[terms, state, *after, limit, memory.meta_key(""), prefixes["paused"], prefixes["optout"],
              prefixes["lock"], attention.WHY, memory.key("")])
    total, pinned = int(found[0]), int(found[1])
    rows = [value.decode() if isinstance(value, bytes) else value for value in found[2:]]
    items = [rows[i:i + 3] for i in range(0, len(rows), 3)]
    nxt = None
    if len(items) > limit:
        items = items[:limit]
        nxt = ":".join(items[-1][1:] + items[-1][:1])
    return [cid for cid, _, _ in items], total, nxt, pinned
