"""Gemini's explicit context cache for the system instruction (persona + knowledge), shared through Redis.

A long knowledge text sent with every reply is paid for with every reply. Past Gemini's minimum for
context caching (GEMINI_CACHE_MIN_TOKENS), the bot stores the system instruction and the tool once
at Google (`client.caches.create`, GEMINI_CACHE_TTL_MINUTES) and each reply names that cache
(`cached_content`) instead of sending the text. Every process finds the cache in Redis under a hash
of the model, the tool and the text, so an edit gets a cache of its own and the old one is deleted.

A reply never waits for a cache: when none is ready it goes inline (Gemini's implicit cache may
still serve it) and one process, holding a Redis lock, makes or renews the cache in a thread
beside it. A failed creation leaves the text inline and is tried again a minute later; a cache
Gemini no longer knows (403/404) is forgotten and that same reply is asked again inline.
"""

import hashlib
import json
import logging
import threading
import time

from google.genai import errors, types

import ai_service

log = logging.getLogger(__name__)

PREFIX = "wa:gcache:"
CURRENT = PREFIX + "current"  # hash: instance -> digest of the cache it uses now
LOCK_SECONDS = 120  # longer than a creation can take (GEMINI_TIMEOUT_SECONDS, at most 60 s)
RETRY_SECONDS = 60  # after a failed creation, the text goes inline this long before the next try
TOO_SMALL_SECONDS = 86400  # Gemini said the text is under its minimum: not asked again for a day
SAFETY_SECONDS = 30  # a cache this close to its expiry is no longer named in a request
CHARS_PER_TOKEN = 4  # Google's rule of thumb ("a token is about 4 characters"), to skip short texts without a call

# The minimum for context caching, in tokens, from https://ai.google.dev/gemini-api/docs/caching:
# Gemini 2.5 Flash and 3 Flash 1,024; Gemini 2.5 Pro and 3 Pro 4,096.
MODEL_MINIMUMS = (("pro", 4096), ("", 1024))


def min_tokens(settings):
    """GEMINI_CACHE_MIN_TOKENS, or (0) the model's own minimum; -1 turns explicit caching off."""
    if settings.gemini_cache_min_tokens:
        return settings.gemini_cache_min_tokens
    model = settings.gemini_model.lower()
    return next(minimum for word, minimum in MODEL_MINIMUMS if word in model)


def digest(settings, system_text):
    """The cache's key: the model, the tool and the text, so any change gets a cache of its own."""
    tool = ai_service.TRANSFER_TO_HUMAN.model_dump_json(exclude_none=True)
    return hashlib.sha256("\0".join([settings.gemini_model, tool, system_text]).encode()).hexdigest()[:32]


def keys(key):
    return {"record": f"{PREFIX}{key}", "lock": f"{PREFIX}{key}:lock", "skip": f"{PREFIX}{key}:skip"}


def worth_caching(settings, system_text):
    minimum = min_tokens(settings)
    return minimum >= 0 and len(system_text) // CHARS_PER_TOKEN >= minimum


def lookup(redis, client, settings, system_text, instance="", now=None):
    """The cache to name instead of `system_text`, or None (send it inline). Never waits for Gemini:
    a missing cache is made, and one past half its life renewed, in a thread beside the reply."""
    if not worth_caching(settings, system_text):
        return None
    now = time.time() if now is None else now
    key = digest(settings, system_text)
    k = keys(key)
    raw, skip = redis.mget(k["record"], k["skip"])
    record = json.loads(raw) if raw else None
    left = record["expires"] - now if record else 0
    if left < ttl_seconds(settings) / 2 and not skip:
        prepare(redis, client, settings, system_text, instance, record)
    return record["name"] if left > SAFETY_SECONDS else None


def ttl_seconds(settings):
    return int(settings.gemini_cache_ttl_minutes * 60)


def prepare(redis, client, settings, system_text, instance="", record=None, wait=False):
    """Make (or renew) the cache in a thread, if no other process is at it; `wait` joins the thread (tests, bench)."""
    if not worth_caching(settings, system_text):
        return None
    key = digest(settings, system_text)
    if not redis.set(keys(key)["lock"], instance or "-", nx=True, ex=LOCK_SECONDS):
        return None
    thread = threading.Thread(target=_refresh, args=(redis, client, settings, system_text, instance, key, record),
                              name="gemini-cache", daemon=True)
    thread.start()
    if wait:
        thread.join()
    return thread


def _refresh(redis, client, settings, system_text, instance, key, record):
    k = keys(key)
    ttl = f"{ttl_seconds(settings)}s"
    try:
        if record is None:
            raw = redis.get(k["record"])
            record = json.loads(raw) if raw else None
        cache = None
        if record:
            try:
                cache = client.caches.update(name=record["name"], config=types.UpdateCachedContentConfig(ttl=ttl))
            except errors.APIError as error:
                log.info("Gemini cache %s not renewed (%s %s): making a new one", key[:8], error.code, error.status)
        if cache is None:
            cache = client.caches.create(model=settings.gemini_model, config=types.CreateCachedContentConfig(
                system_instruction=system_text, tools=ai_service.TOOLS, ttl=ttl, display_name=f"whatsapp-bot {key[:8]}"))
        expires = cache.expire_time.timestamp() if cache.expire_time else time.time() + ttl_seconds(settings)
        redis.set(k["record"], json.dumps({"name": cache.name, "expires": expires}),
                  ex=max(int(expires - time.time()), 1))
        tokens = cache.usage_metadata.total_token_count if cache.usage_metadata else None
        log.info("Gemini cache %s ready until %s (%s tokens)", key[:8], time.strftime("%H:%M:%S", time.localtime(expires)),
                 tokens)
        _replace(redis, client, instance, key)
    except errors.APIError as error:
        too_small = error.code == 400 and "too small" in str(error.message or "").lower()
        log.warning("Gemini cache %s not made (%s %s): the text goes inline%s", key[:8], error.code, error.status,
                    " (under the model's minimum)" if too_small else "")
        redis.set(k["skip"], error.code or 0, ex=TOO_SMALL_SECONDS if too_small else RETRY_SECONDS)
    except Exception as error:  # unreachable, timed out: inline for now, tried again a minute later
        log.warning("Gemini cache %s not made (%s): the text goes inline", key[:8], type(error).__name__)
        redis.set(k["skip"], "error", ex=RETRY_SECONDS)
    finally:
        redis.delete(k["lock"])


def _replace(redis, client, instance, key):
    """This number's cache is now `key`: delete the one it used before, unless another number still uses it."""
    old = redis.hget(CURRENT, instance)
    redis.hset(CURRENT, instance, key)
    old = old.decode() if old else None
    if not old or old == key or old.encode() in redis.hvals(CURRENT):
        return
    raw = redis.getdel(keys(old)["record"])
    if raw:
        try:
            client.caches.delete(name=json.loads(raw)["name"])
        except errors.APIError as error:  # it expires by itself anyway
            log.info("old Gemini cache %s not deleted: %s", old[:8], error.code)


def forget(redis, settings, system_text):
    """Gemini no longer knows this cache (expired early, deleted): the next reply makes another."""
    redis.delete(keys(digest(settings, system_text))["record"])


def generate_reply(client, redis, settings, history, user_text, system_text, media=(), usage=None, instance=""):
    """ai_service.generate_reply with the system instruction cached when it pays; a cache Gemini refuses
    costs this reply one more call inline, never the reply."""
    name = lookup(redis, client, settings, system_text, instance)
    if name:
        try:
            return ai_service.generate_reply(client, settings, history, user_text, system_text, media, usage,
                                             cached_content=name)
        except ai_service.CacheRefused as error:
            log.warning("Gemini refused cache %s (%s): asking again with the text inline", name, error.reason)
            forget(redis, settings, system_text)
            prepare(redis, client, settings, system_text, instance)  # a new one, beside this reply
    return ai_service.generate_reply(client, settings, history, user_text, system_text, media, usage)
