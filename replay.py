"""The official channels' message ids, remembered 30 days: a signed delivery replayed later is not answered again.

Twilio and Meta sign their deliveries, so one captured stays valid forever, and Twilio's carries no time
of its own; the normal dedupe forgets an id after DEDUPE_TTL_SECONDS (a day). Here each day's ids are one
Redis set of 8-byte digests, so a month costs ~25 bytes a message and one round trip to check.
Evolution's deliveries carry only the webhook token; they are not kept here.
"""

import hashlib
import time

CHANNELS = ("twilio", "cloud")
DAYS = 30

SEEN_SCRIPT = """
for i = 1, #KEYS do
  if redis.call('SISMEMBER', KEYS[i], ARGV[1]) == 1 then return 1 end
end
return 0
"""


def _day(now):
    return int(now // 86400)


def digest(message):
    return hashlib.sha256(f"{message.channel}\n{message.instance}\n{message.message_id}".encode()).digest()[:8]


def seen(redis, message, now=None):
    """Whether this message id came in the last DAYS days (always False for Evolution's messages)."""
    if message.channel not in CHANNELS or not message.message_id:
        return False
    today = _day(time.time() if now is None else now)
    keys = [f"wa:replay:{day}" for day in range(today - DAYS, today + 1)]
    return bool(redis.register_script(SEEN_SCRIPT)(keys=keys, args=[digest(message)]))  # EVALSHA: no script body per message


def remember(redis, message, now=None):
    if message.channel not in CHANNELS or not message.message_id:
        return
    key = f"wa:replay:{_day(time.time() if now is None else now)}"
    pipe = redis.pipeline(transaction=False)
    pipe.sadd(key, digest(message))
    pipe.expire(key, (DAYS + 1) * 86400)
    pipe.execute()
