"""Counters shared by every webhook and worker process, in Redis, and `GET /metrics` for Prometheus.

A hash per day (`wa:stats:YYYY-MM-DD`, kept 40 days) feeds the panel's charts; a running total
(`wa:stats:total`) feeds /metrics, whose counters must never go down. Counting only queues
commands on a pipeline the caller runs anyway, or rides in the webhook's script (`LUA_COUNT`).
"""

import json
import logging
import threading
import time
from collections import Counter
from datetime import datetime, timezone

from flask import Blueprint, Response, jsonify, request

log = logging.getLogger(__name__)

TOTAL = "wa:stats:total"
DAY_TTL = 40 * 86400
LAST_ERROR = "wa:gemini:last_error"
INSTANCES = "wa:instances"
GEMINI_BUCKETS = (0.5, 1, 2, 4, 8, 15, 30, 60)
LATENCY_SAMPLES = 2000


def day(now=None):
    return datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc).strftime("%Y-%m-%d")


def day_key(date):
    return f"wa:stats:{date}"


def latency_key(date):
    return f"wa:stats:{date}:latency"


def count(pipe, field, n=1, now=None):
    """Queue on `pipe`: add `n` to `field` today and in the running total."""
    key = day_key(day(now))
    pipe.hincrby(key, field, n)
    pipe.expire(key, DAY_TTL)
    pipe.hincrby(TOTAL, field, n)


# `count_all(day_key, total_key, counts)`: what `count` does, for every field of a JSON object, inside
# the webhook's one script per message (count_keys() gives the two keys).
LUA_COUNT = """
local function count_all(day_key, total_key, counts)
  for field, n in pairs(cjson.decode(counts)) do
    n = math.floor(n)  -- an integer, whichever Lua decoded the JSON
    redis.call('HINCRBY', day_key, field, n)
    redis.call('HINCRBY', total_key, field, n)
  end
  redis.call('EXPIRE', day_key, %d)
end
""" % DAY_TTL


def count_keys(now=None):
    return [day_key(day(now)), TOTAL]


def gemini_call(pipe, seconds, tokens, now=None):
    """Queue on `pipe` one Gemini answer: its latency (histogram) and the tokens it used."""
    count(pipe, "gemini_calls", 1, now)
    count(pipe, "gemini_ms", int(seconds * 1000), now)
    if tokens:
        count(pipe, "tokens", int(tokens), now)
    bucket = next((b for b in GEMINI_BUCKETS if seconds <= b), "inf")
    count(pipe, f"gemini_le:{bucket}", 1, now)


def prompt_tokens(pipe, usage, now=None):
    """Queue on `pipe` the prompt's tokens, split into those Gemini read from a context cache and the rest."""
    prompt = int(usage.get("prompt_token_count") or 0)
    cached = min(int(usage.get("cached_content_token_count") or 0), prompt)
    if cached:
        count(pipe, "cached_tokens", cached, now)
    if prompt - cached:
        count(pipe, "uncached_tokens", prompt - cached, now)


def record_reply(pipe, reply, settings, now=None):
    """Queue on `pipe` what one finished reply adds: replies, fallbacks, handoffs, latency, Gemini usage."""
    now = time.time() if now is None else now
    usage = reply.get("usage") or {}
    if "seconds" in usage:
        gemini_call(pipe, usage["seconds"], usage.get("total_token_count"), now)
        prompt_tokens(pipe, usage, now)
    if not reply.get("sent"):
        return
    count(pipe, "replies", 1, now)
    if reply["parts"] in ([settings.fallback_message], [settings.media_failed_message]):
        count(pipe, "fallbacks", 1, now)
    if reply.get("hold") == "handoff":
        count(pipe, "handoffs", 1, now)
    if reply.get("asked_at"):
        key = latency_key(day(now))
        pipe.rpush(key, round(max(now - float(reply["asked_at"]), 0), 1))
        pipe.ltrim(key, -LATENCY_SAMPLES, -1)
        pipe.expire(key, DAY_TTL)


def write_reply(redis, reply, settings):
    """`record_reply` in a pipeline of its own (the worker's one extra round trip per reply)."""
    pipe = redis.pipeline(transaction=False)
    record_reply(pipe, reply, settings)
    pipe.execute()


def gemini_error(redis, reason, now=None):
    """Remember Gemini's last error for the panel's health box."""
    redis.set(LAST_ERROR, json.dumps({"reason": reason, "at": time.time() if now is None else now}))


class Tally:
    """Counts the webhook makes between Redis round trips (ignored messages, outcomes).

    They ride in the next message's script (`take`), or go in one round trip once they are
    `max_age` seconds old, so counting never adds a round trip per message.
    """

    def __init__(self, max_age=5.0):
        self.max_age = max_age
        self.counts = Counter()
        self.since = None
        self.lock = threading.Lock()

    def add(self, field, n=1):
        with self.lock:
            self.counts[field] += n
            if self.since is None:
                self.since = time.monotonic()

    def take(self):
        """Every pending count, forgotten here: the caller writes them."""
        with self.lock:
            counts, self.counts, self.since = self.counts, Counter(), None
        return counts

    def drain(self, pipe, now=None):
        """Queue every pending count on `pipe` and forget them here."""
        for field, n in self.take().items():
            count(pipe, field, n, now)

    def flush_if_due(self, redis):
        with self.lock:
            due = self.since is not None and time.monotonic() - self.since >= self.max_age
        if due:
            pipe = redis.pipeline(transaction=False)
            self.drain(pipe)
            try:
                pipe.execute()
            except Exception as error:  # counts are not worth failing a webhook call for
                log.debug("counts lost: %s", error)


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _fields(raw):
    return {(k.decode() if isinstance(k, bytes) else k): _number(v) for k, v in raw.items()}


def percentile(samples, fraction):
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(int(round(fraction * (len(ordered) - 1))), len(ordered) - 1)]


def daily(redis, days=14, now=None):
    """The last `days` days, oldest first: counts, tokens, reply latency p50/p90 (seconds)."""
    now = time.time() if now is None else now
    dates = [day(now - 86400 * i) for i in range(days - 1, -1, -1)]
    pipe = redis.pipeline(transaction=False)
    for date in dates:
        pipe.hgetall(day_key(date))
        pipe.lrange(latency_key(date), 0, -1)
    raw = pipe.execute()
    out = []
    for i, date in enumerate(dates):
        fields = _fields(raw[2 * i])
        samples = [_number(v) for v in raw[2 * i + 1]]
        out.append({
            "day": date,
            **{name: int(fields.get(name, 0)) for name in
               ("received", "duplicates", "bursts", "replies", "fallbacks", "handoffs", "tokens", "gemini_calls",
                "cached_tokens", "uncached_tokens")},
            "latency_p50": percentile(samples, 0.5),
            "latency_p90": percentile(samples, 0.9),
        })
    return out


def health(redis, depth):
    """Redis, each Evolution instance's connection state, Gemini's last error, queue depth (`depth()`: buffer.queue_depth)."""
    try:
        redis.ping()
    except Exception as error:
        return {"redis": f"unreachable: {type(error).__name__}", "instances": [], "gemini_last_error": None,
                "queue": None}
    instances = []
    for name, value in sorted(redis.hgetall(INSTANCES).items()):
        try:
            info = json.loads(value)
        except ValueError:
            info = {"state": str(value)}
        state = str(info.get("state", "unknown"))
        instances.append({"name": name.decode() if isinstance(name, bytes) else name, "state": state,
                          "reason": info.get("reason"), "at": info.get("at"), "connected": state == "open"})
    error = redis.get(LAST_ERROR)
    return {"redis": "ok", "instances": instances, "gemini_last_error": json.loads(error) if error else None,
            "queue": depth()}


COUNTERS = (
    ("received", "Customer messages the webhook received"),
    ("duplicates", "Deliveries of a message already received"),
    ("bursts", "Bursts scheduled for an answer"),
    ("replies", "Replies sent"),
    ("fallbacks", "Replies that were the fallback message"),
    ("handoffs", "Chats handed to a person"),
    ("tokens", "Gemini tokens used"),
)


def _label(field):
    """The part after `kind:` as a Prometheus label value (backslashes, quotes, newlines escaped)."""
    value = field.split(":", 1)[1]
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(redis, depth):
    """Prometheus text exposition of the running totals, the Gemini latency histogram and the queue (`depth()`)."""
    total = _fields(redis.hgetall(TOTAL))
    lines = []
    for name, text in COUNTERS:
        metric = f"whatsapp_{name}_total"
        lines += [f"# HELP {metric} {text}.", f"# TYPE {metric} counter", f"{metric} {int(total.get(name, 0))}"]
    lines += ["# HELP whatsapp_ignored_total Messages ignored, by reason.", "# TYPE whatsapp_ignored_total counter"]
    for field in sorted(f for f in total if f.startswith("ignored:")):
        lines.append(f'whatsapp_ignored_total{{reason="{_label(field)}"}} {int(total[field])}')
    lines += ["# HELP whatsapp_outcomes_total Customer messages by what the webhook did with them, besides duplicates and new bursts (buffered, paused, opted_out, rate_limited, no_trigger).",
              "# TYPE whatsapp_outcomes_total counter"]
    for field in sorted(f for f in total if f.startswith("outcome:")):
        lines.append(f'whatsapp_outcomes_total{{outcome="{_label(field)}"}} {int(total[field])}')
    lines += ["# HELP whatsapp_gemini_prompt_tokens_total Prompt tokens of Gemini's replies, read from a context "
              "cache (cached) or not (uncached).", "# TYPE whatsapp_gemini_prompt_tokens_total counter"]
    for cache in ("cached", "uncached"):
        lines.append(f'whatsapp_gemini_prompt_tokens_total{{cache="{cache}"}} {int(total.get(f"{cache}_tokens", 0))}')
    lines += ["# HELP whatsapp_gemini_seconds Time Gemini took to answer.", "# TYPE whatsapp_gemini_seconds histogram"]
    cumulative = 0
    for bucket in GEMINI_BUCKETS:
        cumulative += int(total.get(f"gemini_le:{bucket}", 0))
        lines.append(f'whatsapp_gemini_seconds_bucket{{le="{bucket}"}} {cumulative}')
    calls = int(total.get("gemini_calls", 0))
    lines += [f'whatsapp_gemini_seconds_bucket{{le="+Inf"}} {calls}',
              f"whatsapp_gemini_seconds_sum {total.get('gemini_ms', 0) / 1000:.3f}",
              f"whatsapp_gemini_seconds_count {calls}"]
    queue = depth()
    lines += ["# HELP whatsapp_queue_depth Jobs in the RQ queue plus chats waiting for their job.",
              "# TYPE whatsapp_queue_depth gauge", f"whatsapp_queue_depth {queue['total']}",
              "# HELP whatsapp_waiting_chats Chats with a burst or reply waiting (wa:due).",
              "# TYPE whatsapp_waiting_chats gauge", f"whatsapp_waiting_chats {queue['due_chats']}"]
    return "\n".join(lines) + "\n"


def metrics_blueprint(settings, redis, depth, authorized):
    """`GET /metrics`, behind WEBHOOK_TOKEN like the webhook (`authorized` is webhook.authorized, `depth`
    buffer.queue_depth for the queue: stats knows counters, not the schedule)."""
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    def metrics():
        if not authorized(request, settings.webhook_token):
            return jsonify(error="missing or wrong token"), 401
        return Response(metrics_text(redis, depth), mimetype="text/plain; version=0.0.4")

    return bp

