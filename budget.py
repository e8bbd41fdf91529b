"""A ceiling on Gemini calls per hour for the whole bot, counted in Redis so every worker agrees.

Per-chat limits do not stop a flood from many numbers; this does. Past GEMINI_MAX_CALLS_PER_HOUR
a chat gets FALLBACK_MESSAGE once (in that hour) and nothing more, and the log says so loudly.
"""

import time


def _hour(now):
    return int(now // 3600)


def allow(redis, settings, now=None):
    """Count one Gemini call in this clock hour; False when the hour's ceiling is already reached (0: no ceiling)."""
    if settings.gemini_max_calls_per_hour <= 0:
        return True
    key = f"wa:gemini_calls:{_hour(time.time() if now is None else now)}"
    pipe = redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, 7200)
    return pipe.execute()[0] <= settings.gemini_max_calls_per_hour


def first_notice(redis, cid, now=None):
    """True once per chat per hour: the chat is told (fallback) the first time the ceiling turns it away."""
    return bool(redis.set(f"wa:budget_notice:{cid}:{_hour(time.time() if now is None else now)}", 1, nx=True, ex=7200))
