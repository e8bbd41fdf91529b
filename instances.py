"""Each Evolution instance's last connection state, as its `connection.update` events tell it, kept in Redis.

The webhook records them; `GET /health`, the doctor and the panel read them back.
"""

import json

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
    owner alerted through another instance that is open, in a daemon thread so the webhook answers at once."""
    import logging
    import threading

    import alerts
    from parser import mask

    log = logging.getLogger("instances")
    for instance, state, reason in updates:
        if record_state(redis, instance, state, reason, now):
            log.error("INSTANCE CLOSED: WhatsApp number %s is disconnected (state %s, reason %s); nobody is answered "
                      "there until it is linked again in Evolution's manager", mask(instance), state, reason)
            others = [name for name, info in all_states(redis).items() if name != instance and info.get("state") == "open"]
            if not alerts.owner_numbers(settings):
                continue
            if not others:
                log.warning("no other connected number to alert the owner through")
                continue
            text = alerts.instance_closed_alert(instance, state, reason)
            threading.Thread(target=alerts.notify_owner, args=(session, settings, redis, others[0], text),
                             kwargs={"cause": f"closed:{instance}"}, daemon=True).start()
        else:
            log.info("instance %s: %s (%s)", mask(instance), state, reason)
