-- wrk script: every request a new messages.upsert with a new message id, spread over many chats.
-- wrk ... -s bench/wrk_upsert.lua URL -- PATH CHATS RUN_ID CHAT_BASE PER_CHAT
-- Chat of request n (per wrk thread): CHAT_BASE + (thread offset + (n-1) // PER_CHAT) mod CHATS, so
-- PER_CHAT=3 gives bursts of three messages per chat (the first schedules a job, two are buffered).
-- The body comes from $WRK_TEMPLATE (bench/common.py: upsert_template(), a tests/conftest.py
-- text_message with %s holes for number and id and %d for the timestamp).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  path = args[1] or "/webhook"
  chats = tonumber(args[2] or "1000")
  run_id = args[3] or "R"
  chat_base = tonumber(args[4] or "0")
  per_chat = tonumber(args[5] or "1")
  template = os.getenv("WRK_TEMPLATE")
  counter = 0
  headers = {["Content-Type"] = "application/json"}
end

function request()
  counter = counter + 1
  local chat = chat_base + ((tid - 1) * 1000003 + math.floor((counter - 1) / per_chat)) % chats
  local number = string.format("55119%08d", chat)
  local id = string.format("%s_%d_%d", run_id, tid, counter)
  local body = string.format(template, number, id, os.time())
  return wrk.format("POST", path, headers, body)
end
