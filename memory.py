"""The conversation store: one record per chat, read by Gemini, the panel and the webhook alike.

A chat's record is a Redis list of entries, oldest first, one per message: the customer's (written
by the webhook's script as the message arrives), each part of the bot's reply (as it goes out) and
a person's (from the phone or the panel). Each entry is compact JSON: `from` (bot or human; none
for the customer), `id`, `at`, `text` and, when not text, `kind`; a `note` entry keeps what Gemini understood of the
customer's media. Gemini's history and the panel's thread are two views of it:

- Gemini sees a window at the end of the record: once it passes 2 × HISTORY_MAX_TURNS messages (a
  message and a one-part answer per exchange) or HISTORY_MAX_CHARS (UTF-8 bytes, as stored) when a
  reply is written, its start moves forward in one
  block, down to half of the cap, to a customer's message. The prompt then starts the same way for
  several turns, so Gemini's implicit context cache can serve it.
- The panel sees the whole record: the window and, before it, older entries down to the last
  MIN_MESSAGES (20). Past twice HISTORY_MAX_CHARS even the window's oldest entries go (a customer
  flooding the chat), and never more than LOG_MAX_ENTRIES are kept, so a chat never holds more than
  max(2 × HISTORY_MAX_CHARS, MIN_MESSAGES entries) whatever is sent; a text past MESSAGE_MAX_BYTES
  is stored cut, with a marker (the burst being answered keeps it whole: Gemini reads all of it once).

Beside the record: the chat's details (`wa:chat:<cid>`, a hash: instance, number, name, channel and
the record's byte counts), the index of chats by last activity (`wa:chats`), the message ids the
chat has seen (`wa:ids:<cid>`, a small hash, pruned) and those our sendText answered, until their
echo comes (`wa:own:<instance>:<hour>`). docs/storage.md lists every key.
"""

import hashlib
import json
import time

CHATS = "wa:chats"  # sorted set: cid -> last activity (unix time)
# Ids a chat's `wa:ids` hash holds before its older half goes: the last 24 at least, about 12 exchanges (a
# message and our reply's echo each: 20 bytes an id). Enough for Evolution's redeliveries, which come within minutes; a message
# older than MAX_MESSAGE_AGE_SECONDS is ignored anyway. Bounded, so one chat's ids cost at most ~1.5 KB.
IDS_MAX = 48
MIN_MESSAGES = 20  # the last messages of every chat the record keeps for the panel, whatever their size
MESSAGE_MAX_BYTES = 1000  # a message's text past this (UTF-8) is stored cut, ending CUT_MARK
CUT_MARK = " … [cortado]"
PLACEHOLDERS = {"audio": "[áudio]", "image": "[imagem]", "video": "[vídeo]", "document": "[documento]",
                "sticker": "[figurinha]", "location": "[localização]", "contact": "[contato]", "poll": "[enquete]"}

# Lua shared by every script that writes a chat. `limits(i)` reads store_args() from ARGV[i..i+4].
# `push(K, entry, at, limit, reply, fields)` appends one entry to K.record, keeps the byte counts in
# K.meta (bytes: the record; skip: entries before Gemini's window; window: its bytes), trims (see the
# module's docstring; `reply` marks the end of an exchange, where the window may move), and files
# the chat in K.chats. `fields` (JSON, or '') are the chat's details to set.
# `note_id(ids, field, value, ttl)`: HSETNX one id, false when already there; past IDS_MAX fields the
# older half (by the time, in seconds, that starts each value) goes.
LUA_STORE = """
local function limits(i)
  return {chars = tonumber(ARGV[i]), turns = 2 * tonumber(ARGV[i + 1]), keep = tonumber(ARGV[i + 2]),
          most = tonumber(ARGV[i + 3]), ttl = ARGV[i + 4]}
end
local function user_side(raw)  -- the customer's message (no `from`), a note, or a user turn kept before this store
  local e = cjson.decode(raw)
  return (e['from'] == nil and e['role'] == nil) or e['kind'] == 'note' or e['role'] == 'user'
end
local function push(K, entry, at, limit, reply, fields)
  local n = redis.call('RPUSH', K.record, entry)
  local state = redis.call('HMGET', K.meta, 'bytes', 'skip', 'window')
  local bytes, skip, window = tonumber(state[1]), tonumber(state[2]) or 0, tonumber(state[3])
  if bytes and window and skip < n then
    bytes, window = bytes + #entry, window + #entry
  else  -- a new record, or one kept before these counts: count it once
    skip, bytes, window = math.min(skip, n - 1), 0, 0
    for j, item in ipairs(redis.call('LRANGE', K.record, 0, -1)) do
      bytes = bytes + #item
      if j > skip then window = window + #item end
    end
  end
  if reply and (n - skip > limit.turns or window > limit.chars) then
    local items = redis.call('LRANGE', K.record, skip, -1)
    local count, drop, size = #items, 0, window
    while drop < count - 1 and (count - drop > limit.turns / 2 or size > limit.chars / 2) do
      drop = drop + 1
      size = size - #items[drop]
    end
    local cut = drop
    while cut < count and not user_side(items[cut + 1]) do cut = cut + 1 end
    if cut == count then  -- only the shop's entries after the cut: keep the last exchange whole
      cut = drop
      while cut > 0 and not user_side(items[cut + 1]) do cut = cut - 1 end
    end
    for j = 1, cut do window = window - #items[j] end
    skip = skip + cut
  end
  while n > limit.most or (n > limit.keep and (skip > 0 or bytes > 2 * limit.chars)) do
    local gone = #redis.call('LPOP', K.record)
    n, bytes = n - 1, bytes - gone
    if skip > 0 then skip = skip - 1 else window = window - gone end
  end
  local set = {'bytes', bytes, 'skip', skip, 'window', window}
  if fields ~= '' then
    for name, value in pairs(cjson.decode(fields)) do
      set[#set + 1] = name
      set[#set + 1] = value
    end
  end
  redis.call('HSET', K.meta, unpack(set))
  redis.call('EXPIRE', K.record, limit.ttl)
  redis.call('EXPIRE', K.meta, limit.ttl)
  redis.call('ZADD', K.chats, 'GT', at, K.cid)
  local now = redis.call('TIME')[1]
  redis.call('ZREMRANGEBYSCORE', K.chats, '-inf', now - limit.ttl)  -- chats whose record expired leave the index
end
local function note_id(ids, field, value, ttl)
  local new = redis.call('HSETNX', ids, field, value) == 1
  redis.call('EXPIRE', ids, ttl)
  if new and redis.call('HLEN', ids) > %d then
    local all, fields = redis.call('HGETALL', ids), {}
    for j = 1, #all, 2 do fields[#fields + 1] = {all[j], tonumber(string.match(all[j + 1], '^%%d+')) or 0} end
    table.sort(fields, function(a, b) return a[2] < b[2] end)
    for j = 1, #fields - %d do redis.call('HDEL', ids, fields[j][1]) end
  end
  return new
end
""" % (IDS_MAX, IDS_MAX // 2)

# KEYS: record, meta, chats, ids, sending; ARGV: cid, entry, at, store args (5), seen field, seen value, ids ttl,
#       sending member ('' none)
# Once per message id: the echo of a message the panel sent, after this, finds it seen (a duplicate); one that
# came before found the `sending` mark (ours, nothing written), which this removes.
RECORD_SCRIPT = LUA_STORE + """
local marked = ARGV[12] ~= '' and redis.call('LREM', KEYS[5], 0, ARGV[12]) > 0
if not note_id(KEYS[4], ARGV[9], ARGV[10], ARGV[11]) and not marked then return 0 end
push({record = KEYS[1], meta = KEYS[2], chats = KEYS[3], cid = ARGV[1]}, ARGV[2], ARGV[3], limits(4), true, '')
return 1
"""

# KEYS: record, meta, chats, lock, own, sending
# ARGV: cid, token, store args (5), own ttl, own field ('' none), own value, sending member, note entry, entry, at,
#       part ("<rid>-<n>", kept in the chat's details: chats.act and a later job then know it is in the record)
SENT_SCRIPT = LUA_STORE + """
if redis.call('GET', KEYS[4]) ~= ARGV[2] then return 0 end
if ARGV[9] ~= '' then  -- its id is known: from now on its echo is told by it (else by its text)
  redis.call('LREM', KEYS[6], 0, ARGV[11])
  redis.call('HSET', KEYS[5], ARGV[9], ARGV[10])
  redis.call('EXPIRE', KEYS[5], ARGV[8])
end
local K = {record = KEYS[1], meta = KEYS[2], chats = KEYS[3], cid = ARGV[1]}
if ARGV[15] ~= '' and redis.call('HGET', KEYS[2], 'part') == ARGV[15] then return 1 end  -- written already
if ARGV[12] ~= '' then push(K, ARGV[12], ARGV[14], limits(3), false, '') end
push(K, ARGV[13], ARGV[14], limits(3), true, ARGV[15] ~= '' and cjson.encode({part = ARGV[15]}) or '')
return 1
"""

# KEYS: ids; ARGV: field, value, ttl
SEEN_SCRIPT = LUA_STORE + """
return note_id(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) and 1 or 0
"""
OWN_SECONDS = 3600  # an own id is looked up in its hour's hash and the one before: its echo comes within seconds


def key(cid):
    """The chat's record (a list)."""
    return f"wa:history:{cid}"


def meta_key(cid):
    return f"wa:chat:{cid}"


def ids_key(cid):
    """Message ids the chat has seen (a customer's, a person's, our echoes): one small hash."""
    return f"wa:ids:{cid}"


def own_keys(instance, now=None):
    """The ids our sendText answered on `instance` this hour and the hour before, each hash `{id: "cid rid"}`.

    Per instance, not per chat: an echo may come under another JID than the one we sent to (a '@lid'
    chat's phone JID). An id leaves its hash when its echo comes, and the hash two hours later.
    """
    hour = int((time.time() if now is None else now) // OWN_SECONDS)
    return [f"wa:own:{instance}:{hour}", f"wa:own:{instance}:{hour - 1}"]


def sending_key(instance, text):
    """Chats with a part of this text on its way and no id known yet (the echo may come first)."""
    return f"wa:sending:{instance}:{text_digest(text)}"


def text_digest(text):
    return hashlib.sha1(text.strip().encode()).hexdigest()[:16]


def id_field(message_id):
    """A message id as the ids hashes keep it: 12 hex digits (48 bits: a clash among them is never seen)."""
    return hashlib.sha1(message_id.encode()).hexdigest()[:12]


def id_value(now=None):
    """The time an id was noted, by which the ids hash is pruned (whole seconds: Redis keeps it as a number)."""
    return str(int(time.time() if now is None else now))


def clip(text, limit):
    """`text` within `limit` UTF-8 bytes, cut at a character with CUT_MARK when it was longer."""
    data = (text or "").encode()
    if len(data) <= limit:
        return text or ""
    keep = max(limit - len(CUT_MARK.encode()), 0)
    return data[:keep].decode(errors="ignore").rstrip() + CUT_MARK


def entry(message_id, sender, text, at, settings, kind="text"):
    """One record entry as stored: compact JSON, the text cut to MESSAGE_MAX_BYTES.

    `from` is left out for the customer (most entries; 18 bytes each), `kind` for text. `at` is the
    message's own timestamp (WhatsApp's, whole seconds) or the time of sending.
    """
    item = {"from": sender} if sender != "customer" else {}
    item.update(id=message_id or "", at=int(at or time.time()), text=clip(text, MESSAGE_MAX_BYTES))
    if kind != "text":
        item["kind"] = kind
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


def chat_fields(instance, chat_id, reply_to, name="", channel="evolution"):
    """Who the chat is with and through which instance (the name only when known) and channel (when not Evolution)."""
    fields = {"instance": instance, "chat_id": chat_id, "reply_to": reply_to}
    if name:
        fields["name"] = name
    if channel != "evolution":
        fields["channel"] = channel
    return json.dumps(fields, ensure_ascii=False)


def message_entry(message, sender, settings):
    """The entry, its time and the chat's details of one parsed WhatsApp message, as the scripts take them."""
    at = message.timestamp or int(time.time())
    fields = chat_fields(message.instance, message.chat_id, message.reply_to,
                         message.push_name if sender == "customer" else "", message.channel)
    return entry(message.message_id, sender, message.text, at, settings, message.kind), repr(at), fields


def store_keys(cid):
    return [key(cid), meta_key(cid), CHATS]


def store_args(settings):
    """The caps and expiry `limits(i)` reads, in its order."""
    return [settings.history_max_chars, settings.history_max_turns, min(MIN_MESSAGES, settings.log_max_entries),
            settings.log_max_entries, settings.history_ttl_seconds]


def human_call(cid, instance, message_id, text, at, settings, sending_member=""):
    """(keys, args) of RECORD_SCRIPT for a person's answer from the panel (chats.answer_as_person runs it)."""
    at = at or int(time.time())
    item = entry(message_id, "human", text, at, settings)
    return ([*store_keys(cid), ids_key(cid), sending_key(instance, text)],
            [cid, item, repr(at), *store_args(settings), id_field(message_id), id_value(), settings.dedupe_ttl_seconds,
             sending_member])


def record_human(redis, cid, message_id, text, at, settings, instance=""):
    """A person's answer joins the record, once. Returns whether it was written."""
    keys, args = human_call(cid, instance, message_id, text, at, settings)
    return bool(redis.register_script(RECORD_SCRIPT)(keys=keys, args=args))


def record_sent(redis, cid, instance, rid, message_id, text, settings, lock_key, token, note="", fallback_id="",
                kind="text"):
    """One part of the bot's reply went out: its id is ours from now on, and it joins the record.

    Only while the sending job still holds the chat (`lock_key` holds its `token`): the id goes to
    the instance's own ids and the `sending` mark of its text (buffer.attempt) is cleared (both only
    when sendText answered with an id: else `fallback_id` names the entry), and the entry
    (after a `note` of what Gemini understood of the burst's media, with the first part) is written.
    A chat erased or taken over meanwhile gets nothing written back; its echo is still told ours by
    the `sending` mark, kept for its hour. `kind` marks a follow-up ("followup"). Returns whether it was written.
    """
    now = time.time()
    note_entry = entry("", "bot", f"[{note}]", now, settings, kind="note") if note else ""
    own = [id_field(message_id), f"{cid} {rid}"] if message_id else ["", ""]
    return bool(redis.register_script(SENT_SCRIPT)(
        keys=[*store_keys(cid), lock_key, own_keys(instance, now)[0], sending_key(instance, text)],
        args=[cid, token, *store_args(settings), 2 * OWN_SECONDS, *own, f"{cid} {rid}",
              note_entry, entry(message_id or fallback_id or f"{rid}-{now:.3f}", "bot", text, now, settings, kind), repr(int(now)),
              fallback_id]))


def first_sighting(redis, cid, message_id, settings):
    """Note a message id in the chat's ids hash; False when it was there already (a duplicate delivery)."""
    return bool(redis.register_script(SEEN_SCRIPT)(
        keys=[ids_key(cid)], args=[id_field(message_id), id_value(), settings.dedupe_ttl_seconds]))


def note_alert(redis, instance, message_id):
    """An alert to the owner went out: its echo is the bot's own (no chat of ours: nothing is counted for it)."""
    pipe = redis.pipeline(transaction=False)
    pipe.hset(own_keys(instance)[0], id_field(message_id), "alert -")
    pipe.expire(own_keys(instance)[0], 2 * OWN_SECONDS)
    pipe.execute()


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _entries(redis, cid):
    """(skip, entries): the record, and how many of its first entries are before Gemini's window."""
    pipe = redis.pipeline(transaction=False)
    pipe.hget(meta_key(cid), "skip")
    pipe.lrange(key(cid), 0, -1)
    skip, raw = pipe.execute()
    return int(skip or 0), [_normal(json.loads(item)) for item in raw]


def _normal(item):
    """An entry with its `from`, also one of the turns kept before this store ({"role", "text"[, "by"]})."""
    if "role" in item:
        sender = "customer" if item["role"] == "user" else "human" if item.get("by") == "human" else "bot"
        return {"from": sender, "id": "", "at": 0, "text": item.get("text", "")}
    return {"from": "customer", **item}


def _user_side(item):
    return item["from"] == "customer" or item.get("kind") == "note"


def load_history(redis, cid, exclude=()):
    """Gemini's window of the record as turns, oldest first: [{"role": "user" | "model", "text"[, "by": "human"]}].

    `exclude` are the ids of the burst being answered (Gemini gets it as the prompt): those, and any
    customer's message after the first of them, are left out; a reply sent meanwhile stays.
    A run of the customer's messages is one user turn, a reply's parts one model turn, a person's
    message a model turn of its own; media without a caption stands as a placeholder ("[áudio]").
    """
    skip, items = _entries(redis, cid)
    exclude, turns, runs, after = set(exclude), [], [], False
    for item in items[skip:]:
        if item["from"] == "customer" and (after or item["id"] in exclude):
            after = True
            continue
        kind = item.get("kind", "text")
        text = item["text"] or PLACEHOLDERS.get(kind) or f"[{kind}]"
        run = "user" if _user_side(item) else item["from"]  # user, bot or human
        if runs and runs[-1] == run != "human":
            turns[-1]["text"] += ("\n" if run == "user" else "\n\n") + text
            continue
        turns.append({"role": "user" if run == "user" else "model", "text": text, **({"by": "human"} if run == "human" else {})})
        runs.append(run)
    return turns


def thread(redis, cid):
    """The whole record for the panel, oldest first: [{id, from, text, at, kind}]."""
    return [{"id": item["id"], "from": item["from"], "text": item["text"], "at": item["at"],
             "kind": item.get("kind", "text")} for item in _entries(redis, cid)[1]]


def _details(cid, meta, last):
    """The chat's details, with its last message (the record's last entry) as last_text, last_at and last_from."""
    found = {"id": cid, **{_text(k): _text(v) for k, v in meta.items()}}
    for name in ("bytes", "skip", "window", "part"):
        found.pop(name, None)
    if last:
        item = _normal(json.loads(last))
        kind = item.get("kind", "text")
        found.update(last_text=item["text"] or f"[{kind}]", last_at=str(item["at"]), last_from=item["from"])
    return found


def chats(redis, limit=200):
    """The most recently active chats, newest first: [{id, instance, chat_id, reply_to, name, last_*}]."""
    return details_of(redis, [_text(cid) for cid in redis.zrevrange(CHATS, 0, limit - 1)])


def details_of(redis, cids):
    """These chats' details as `details` gives them, in this order, in one round trip (unknown ones left out)."""
    pipe = redis.pipeline(transaction=False)
    for cid in cids:
        pipe.hgetall(meta_key(cid))
        pipe.lindex(key(cid), -1)
    raw = pipe.execute() if cids else []
    return [_details(cid, raw[2 * i], raw[2 * i + 1]) for i, cid in enumerate(cids) if raw[2 * i]]


def details(redis, cid):
    """One chat's details (instance, reply_to, name, last message), or None when unknown."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(meta_key(cid))
    pipe.lindex(key(cid), -1)
    meta, last = pipe.execute()
    return _details(cid, meta, last) if meta else None


def own_ids_of(redis, instance, cid):
    """[(key, field)] of our sends to chat `cid` whose echo has not come yet (their values name the chat)."""
    if not instance:
        return []
    hashes = own_keys(instance)
    pipe = redis.pipeline(transaction=False)
    for name in hashes:
        pipe.hgetall(name)
    return [(name, field) for name, found in zip(hashes, pipe.execute()) for field, value in found.items()
            if _text(value).startswith(f"{cid} ")]


def erase(pipe, cid, own=()):
    """Queue on `pipe` the erasure of a chat's record, details and ids, and of `own` (own_ids_of) (LGPD, with forget)."""
    pipe.delete(key(cid), meta_key(cid), ids_key(cid), f"wa:log:{cid}")  # wa:log: the panel's log before this store
    pipe.zrem(CHATS, cid)
    for name, field in own:
        pipe.hdel(name, field)
