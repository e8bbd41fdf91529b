"""Evolution's instances (the shop's linked numbers): their last connection state, and linking them from the panel.

The webhook records each `connection.update` in Redis; `GET /health`, the doctor and the panel read
them back. `create`, `qr_code` and `logout` are the Evolution calls behind the panel's Conectar
WhatsApp page, so the owner never needs Evolution's manager.
"""

import json
import logging
import threading
from urllib.parse import quote

import requests

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
                  "there until it is linked again (the panel's Conectar WhatsApp)", mask(instance), state, reason)
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


# --- linking a number (the panel's Conectar WhatsApp) -------------------------------------------

def _call(session, settings, method, path, payload=None):
    """One Evolution call with the global `apikey`; JSON back, or sender.EvolutionError with its status and body."""
    url = settings.evolution_api_url.rstrip("/") + path
    try:
        response = session.request(method, url, json=payload, headers={"apikey": settings.evolution_api_key},
                                   timeout=settings.evolution_timeout_seconds)
    except requests.RequestException as error:
        raise sender.EvolutionError(path, None, type(error).__name__) from None
    if response.status_code >= 300:
        raise sender.EvolutionError(path, response.status_code, response.text[:300])
    try:
        return response.json()
    except ValueError:
        return None


def create(session, settings, name):
    """`POST /instance/create` for a Baileys (QR code) instance; False when the name is already in use."""
    try:
        _call(session, settings, "POST", "/instance/create",
              {"instanceName": name, "integration": "WHATSAPP-BAILEYS", "qrcode": True})
    except sender.EvolutionError as error:
        if error.status == 403 and "already in use" in str(error.body):
            return False
        raise
    log.info("instance %s created", mask(name))
    return True


def qr_code(session, settings, name):
    """(state, QR code as a data: URL or "") from `GET /instance/connect/{name}`, which also starts the connection
    of a closed instance. It answers the state when open, else {pairingCode, code, base64, count}: `base64` is
    missing until Baileys made the first QR code."""
    body = _call(session, settings, "GET", f"/instance/connect/{quote(name, safe='')}")
    if not isinstance(body, dict):
        return "connecting", ""
    if body.get("error"):  # the controller's catch: {"error": true, "message": "..."} with 200
        raise sender.EvolutionError("/instance/connect", 200, body.get("message"))
    if isinstance(body.get("instance"), dict):
        return str(body["instance"].get("state") or body["instance"].get("status") or "close"), ""
    qr = body.get("base64")
    return "connecting", qr if isinstance(qr, str) and qr.startswith("data:image/") else ""


def logout(session, settings, name):
    """`DELETE /instance/logout/{name}`: unlink the phone, keep the instance. An instance already closed is fine."""
    try:
        _call(session, settings, "DELETE", f"/instance/logout/{quote(name, safe='')}")
    except sender.EvolutionError as error:
        if error.status != 400 or "not connected" not in str(error.body):
            raise
    log.info("instance %s logged out", mask(name))
