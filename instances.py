"""Each Evolution instance's last connection state, as its `connection.update` events tell it, kept in Redis.

The webhook records them; `GET /health`, the doctor and the panel read them back.
"""

import json
import logging
import threading

import alerts
import sender
from parser import mask

log = logging.getLogger(__name__)

KEY = "wa:instances"  # hash: instance name -> JSON {state, reason, at}

# HSET returning the previous value, atomically: two webhook processes given the same close see one change.
_SWAP = "local old = redis.call('HGET', KEYS[1], ARGV[1]) redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return old"


def record_state(redis, instance, state, reason, now):
    """Store the instance's state; True only when it just changed to closed (log loudly once and alert then)."""
    new = json.dumps({"state": state, "reason": reason, "at": int(now)})
    old = redis.eval(_SWAP, 1, KEY, instance, new)
    before = _load(old).get("state") if old else None
    return state == "close" and before != "close"


def all_states(redis):
    """{instance: {state, reason, at}} for every instance seen so far."""
    return {name.decode() if isinstance(name, bytes) else name: _load(value) for name, value in redis.hgetall(KEY).items()}


def _load(raw):
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def handle_updates(redis, settings, updates, session, now):
    """Record each (instance, state, reason); an instance that just closed is logged loudly once and the
    owner alerted through another open instance, in a daemon thread so the webhook answers at once."""
    for instance, state, reason in updates:
        if not record_state(redis, instance, state, reason, now):
            log.info("instance %s: %s (%s)", mask(instance), state, reason)
            continue
        log.error("INSTANCE CLOSED: WhatsApp number %s is disconnected (state %s, reason %s); nobody is answered "
                  "there until it is linked again in Evolution's manager", mask(instance), state, reason)
        if alerts.owner_numbers(settings):
            threading.Thread(target=alert_closed, args=(redis, settings, session, instance, state, reason),
                             daemon=True).start()


def alert_closed(redis, settings, session, instance, state, reason):
    """Tell the owner through another instance that is open: one recorded open, else one Evolution lists as open."""
    others = [name for name, info in all_states(redis).items() if name != instance and info.get("state") == "open"]
    if not others:
        try:
            rows = sender.fetch_instances(session, settings)
        except sender.EvolutionError as error:
            rows = []
            log.warning("cannot list Evolution's instances to alert the owner: %s", error)
        others = [row.get("name") for row in rows if row.get("connectionStatus") == "open" and row.get("name") != instance]
    if not others:
        log.warning("no other connected number to alert the owner through that %s closed", mask(instance))
        return
    alerts.notify_owner(session, settings, redis, others[0], alerts.instance_closed_alert(instance, state, reason),
                        cause=f"closed:{instance}")
