"""Outgoing events for n8n, a CRM or any HTTP receiver (EVENTS_URL): what happened in each chat, signed.

Recording an event is two Redis writes, cheap enough for the webhook's request path; nothing there
waits on the receiver. Each worker runs a small pump beside its dispatcher that turns due events into
RQ jobs (`events.deliver`), one POST each. A failed POST is tried again with backoff until
EVENTS_RETRY_HOURS after the event; then it lands in a dead-letter set that the panel's health page
lists with a "reenviar" button. Every event keeps its id (`X-Event-Id`) across tries, so a receiver
that saw it already can drop the copy.

Keys: `wa:event:<id>` (a hash: the body exactly as signed, when it was made, tries, last error),
`wa:events:due` (id → next try), `wa:events:dead` (id → when it was given up).
"""

import hashlib
import hmac
import json
import logging
import random
import threading
import time
import uuid
from datetime import datetime, timezone

import requests
from redis.exceptions import RedisError
from rq import Queue

log = logging.getLogger(__name__)

NAMES = ("message.received", "reply.sent", "handoff.requested", "person.replied", "optout", "followup.sent")
DUE = "wa:events:due"
DEAD = "wa:events:dead"
JOB = "events.deliver"
TIMEOUT_SECONDS = 10  # one POST; the lease below outlasts it, so a slow receiver never gets a second copy at once
LEASE_SECONDS = TIMEOUT_SECONDS + 30
KEEP_SECONDS = 8 * 86400  # an event's hash outlives its 24 h of tries; a dead one is kept DEAD_DAYS
DEAD_DAYS = 30
POLL_SECONDS = 0.5
BATCH = 200


def key(event_id):
    return f"wa:event:{event_id}"


def chat_key(settings, cid):
    """The chat as receivers see it: keyed with EVENTS_SECRET, so it cannot be turned back into a number."""
    return hmac.new(settings.events_secret.encode(), cid.encode(), hashlib.sha256).hexdigest()[:32]


def sign(secret, raw):
    """`X-Signature-256: sha256=<hex>`: HMAC-SHA256 of the raw body, like Meta's and GitHub's webhooks."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def record(redis, settings, name, cid, instance, channel, number="", text="", now=None, **extra):
    """Keep one event for delivery (nothing when EVENTS_URL is empty); returns its id. One round trip."""
    if not settings.events_url:
        return None
    now = time.time() if now is None else now
    event_id = uuid.uuid4().hex
    body = {"id": event_id, "event": name,
            "at": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "instance": instance, "channel": channel or "evolution", "chat": chat_key(settings, cid),
            "text": text or "", **extra}
    if settings.events_include_number and number:
        body["number"] = number
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    pipe = redis.pipeline()
    pipe.hset(key(event_id), mapping={"body": raw, "created": repr(now), "tries": 0})
    pipe.expire(key(event_id), KEEP_SECONDS)
    pipe.zadd(DUE, {event_id: now})
    pipe.execute()
    return event_id


def from_message(redis, settings, name, message):
    """message.received or person.replied for a webhook's message; a Redis failure here loses only the event."""
    if not settings.events_url:
        return None
    import buffer

    try:
        return record(redis, settings, name, buffer.chat_ref(message.instance, message.chat_id, message.channel),
                      message.instance, message.channel, message.reply_to, message.text or f"[{message.kind}]")
    except RedisError as error:
        log.error("event %s not recorded: %s", name, error)
        return None


# KEYS: due; ARGV: now, lease end, batch. Takes the due events for this pump: their time moves to the
# lease's end, so a job that is lost (worker killed) is enqueued again then, and no other pump takes them.
PUMP_SCRIPT = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return due
"""


def pump(redis, queue, now=None):
    """Enqueue one delivery job per due event; returns the ids."""
    now = time.time() if now is None else now
    ids = [i.decode() if isinstance(i, bytes) else i
           for i in redis.register_script(PUMP_SCRIPT)(keys=[DUE], args=[repr(now), repr(now + LEASE_SECONDS), BATCH])]
    if ids:
        queue.enqueue_many([Queue.prepare_data(JOB, args=(event_id,), timeout=LEASE_SECONDS, result_ttl=0,
                                               failure_ttl=86400) for event_id in ids])
    return ids


class Pump(threading.Thread):
    """Beside each worker's dispatcher when EVENTS_URL is set; any number of them share the events safely."""

    def __init__(self, redis, queue):
        super().__init__(name="events", daemon=True)
        self.redis, self.queue = redis, queue
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            try:
                if len(pump(self.redis, self.queue)) == BATCH:
                    continue
            except RedisError as error:  # Redis restarting: the events wait in their set
                log.debug("events pump: %s", error)
            self.stopped.wait(POLL_SECONDS)


def deliver(event_id):
    """RQ entry point: POST one event to EVENTS_URL, signed; on failure schedule the next try or give it up."""
    import worker  # the process's settings, Redis and HTTP session

    ctx = worker.get_context()
    send(ctx.redis, ctx.session, ctx.settings, event_id)


def send(redis, session, settings, event_id, now=None):
    """One try at one event: "sent", "retry", "dead" or "gone" (delivered or erased meanwhile)."""
    stored = redis.hgetall(key(event_id))
    if not stored or b"body" not in stored:
        redis.zrem(DUE, event_id)
        return "gone"
    raw = stored[b"body"]
    error = None
    try:
        response = session.post(settings.events_url, data=raw, timeout=TIMEOUT_SECONDS, headers={
            "Content-Type": "application/json; charset=utf-8", "X-Signature-256": sign(settings.events_secret, raw),
            "X-Event-Id": event_id, "User-Agent": "whatsapp-bot-events/1"})
        if 200 <= response.status_code < 300:
            pipe = redis.pipeline()
            pipe.delete(key(event_id))
            pipe.zrem(DUE, event_id)
            pipe.execute()
            return "sent"
        error = f"HTTP {response.status_code}"
    except requests.RequestException as failure:
        error = type(failure).__name__
    now = time.time() if now is None else now
    tries = redis.hincrby(key(event_id), "tries", 1)
    pipe = redis.pipeline()
    pipe.hset(key(event_id), "error", error)
    if now - float(stored.get(b"created", now)) >= settings.events_retry_hours * 3600:
        log.error("event %s not delivered after %d tries (%s): kept in the dead-letter list", event_id, tries, error)
        pipe.zrem(DUE, event_id)
        pipe.zadd(DEAD, {event_id: now})
        pipe.expire(key(event_id), DEAD_DAYS * 86400)
        pipe.execute()
        return "dead"
    delay = min(settings.retry_base_seconds * 2 ** (tries - 1), 3600) * random.uniform(0.75, 1.25)
    log.warning("event %s: %s; try %d again in %.0fs", event_id, error, tries + 1, delay)
    pipe.zadd(DUE, {event_id: now + delay})
    pipe.execute()
    return "retry"


def dead(redis, limit=100):
    """The events given up on, newest first: id, event name, when it happened, tries and the last error."""
    ids = [i.decode() for i in redis.zrevrange(DEAD, 0, limit - 1)]
    pipe = redis.pipeline(transaction=False)
    for event_id in ids:
        pipe.hgetall(key(event_id))
    rows = []
    for event_id, stored in zip(ids, pipe.execute()):
        if not stored:
            redis.zrem(DEAD, event_id)  # expired
            continue
        body = json.loads(stored[b"body"])
        rows.append({"id": event_id, "event": body.get("event"), "at": body.get("at"),
                     "tries": int(stored.get(b"tries", 0)), "error": stored.get(b"error", b"").decode()})
    return rows


# KEYS: dead, due, event; ARGV: id, now. A resent event gets a fresh EVENTS_RETRY_HOURS of tries.
RESEND_SCRIPT = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 or redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
redis.call('HSET', KEYS[3], 'created', ARGV[2], 'tries', 0)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""


def resend(redis, event_id, now=None):
    """Put a dead event back in line (the panel's "reenviar"); False when there is no such dead event."""
    now = time.time() if now is None else now
    return bool(redis.register_script(RESEND_SCRIPT)(keys=[DEAD, DUE, key(event_id)],
                                                     args=[event_id, repr(now), KEEP_SECONDS]))
