"""The owner's settings from the panel (pause, hours, messages, alerts, debounce), kept in Redis over `.env`.

`.env` gives the defaults (config.py); what the owner saves in the panel's Configurações is a Redis hash
of environment-style strings, checked by the same validators as start-up (`config.with_values`).
`effective` returns the frozen Settings with them applied: the worker calls it at the start of each
job, and the webhook keeps a copy (`Live`) at most two seconds old, replaced at once in the process
that saved, so a change counts from the next reply or message.
"""

import functools
import logging
import os
import threading
import time
import weakref

import redis as redis_lib

import config

log = logging.getLogger(__name__)

KEY = "wa:settings"  # hash: field name -> the value as .env would write it
FIELDS = {  # the settings the panel changes, and the JSON type each is shown and accepted as
    "bot_paused": bool, "bot_active": str, "business_hours": str, "closed_message": str, "handoff_message": str,
    "owner_number": list, "debounce_seconds": float, "handoff_pause_minutes": float,
}
MAX_TEXT = 2000  # characters of a message or the hours: WhatsApp texts, not documents


def effective(redis, base):
    """`base` (from .env) with the owner's saved values; `base` itself when nothing is saved or Redis fails."""
    try:
        stored = redis.hgetall(KEY)
    except redis_lib.RedisError as error:
        log.debug("owner's settings not read (%s): using .env's", error)  # the outage is logged loudly elsewhere
        return base
    strings = {_text(name): _text(value) for name, value in stored.items() if _text(name) in FIELDS}
    if not strings:
        return base
    try:
        return _applied(base, tuple(sorted(strings.items())))
    except config.SettingsError as error:  # e.g. .env changed under a saved value: .env wins until it is fixed
        log.error("owner's settings ignored, using .env's: %s", error)
        return base


@functools.lru_cache(maxsize=8)
def _applied(base, items):
    """The validators run once per saved change, not once per job (about 0.15 ms each)."""
    return config.with_values(base, dict(items))


def shown(settings):
    """The panel's view of the settings: {field: value} in JSON types."""
    values = {name: getattr(settings, name) for name in FIELDS}
    values["owner_number"] = list(settings.owner_number)
    return values


def save(redis, base, changes):
    """Check `changes` ({field: JSON value}; None goes back to .env's) over what is saved, store them, return the
    new effective settings. Raises SettingsError (pt-BR, naming the setting) and stores nothing when one is wrong."""
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise config.SettingsError(f"{unknown[0]}: não é uma configuração do painel; use uma destas: {', '.join(FIELDS)}")
    strings = {_text(name): _text(value) for name, value in redis.hgetall(KEY).items() if _text(name) in FIELDS}
    for name, value in changes.items():
        if value is None:
            strings.pop(name, None)
        else:
            strings[name] = _as_env(name, value)
    settings = config.with_values(base, strings)
    with redis.pipeline() as pipe:  # MULTI: a reader sees the old set or the new one, never half
        pipe.delete(KEY)
        if strings:
            pipe.hset(KEY, mapping=strings)
        pipe.execute()
    for live in list(_live):  # this process's webhook uses them from its next message
        if live.base == base:
            live.settings = settings
    log.info("owner's settings saved: %s", ", ".join(sorted(changes)))
    return settings


def _as_env(name, value):
    """A JSON value as .env would write it, or SettingsError in pt-BR saying what the field takes."""
    kind = FIELDS[name]
    upper = name.upper()
    if kind is bool:
        if not isinstance(value, bool):
            raise config.refuse(upper, f"use true ou false, veio {value!r}", "true")
        return "true" if value else "false"
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise config.refuse(upper, f"precisa ser um número, veio {value!r}", "120")
        return repr(value)
    if kind is list:
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise config.refuse(upper, "precisa ser uma lista de números", '["5511999998888"]')
        return ",".join(item.strip() for item in value if item.strip())
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise config.refuse(upper, f"precisa ser um texto de até {MAX_TEXT} letras", "Estamos fechados agora.")
    return value.strip()


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


class Live:
    """The webhook's copy of the effective settings: read at start-up, then every SECONDS by a daemon thread, and
    replaced at once by a save in this process (the panel lives in the webhook). No request waits on Redis for
    it: a stalled Redis must not delay the answer that says so."""

    SECONDS = 2.0

    def __init__(self, redis, base):
        self.redis, self.base = redis, base
        self.settings = effective(redis, base)
        self.pid = None  # the process whose refresher runs (gunicorn builds the app in each worker)
        self.lock = threading.Lock()
        _live.add(self)

    def get(self):
        if self.pid != os.getpid():
            with self.lock:
                if self.pid != os.getpid():
                    self.pid = os.getpid()
                    threading.Thread(target=_refresh, args=(weakref.ref(self),), daemon=True,
                                     name="shop-settings").start()
        return self.settings


_live = weakref.WeakSet()  # this process's Live copies, updated by save()


def _refresh(ref):
    """Read the settings every Live.SECONDS while the Live copy exists (a test's app goes away; so does this)."""
    while True:
        time.sleep(Live.SECONDS)
        live = ref()
        if live is None:
            return
        live.settings = effective(live.redis, live.base)
        del live
