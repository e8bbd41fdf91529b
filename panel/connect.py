"""The Conectar WhatsApp page: create an Evolution instance, show its QR code until it is linked, disconnect it.

The owner never needs Evolution's manager (another login, in English). The page polls
`/api/instances/<name>/qr`, which asks Evolution's `GET /instance/connect/{name}`: the QR code while
the phone has not scanned it (Evolution renews it), the state `open` once linked.
"""

import logging
import re

from flask import Blueprint, jsonify

import chatlog
import instances
import sender
from panel.auth import login_required
from panel.common import deps, json_body, render

log = logging.getLogger(__name__)

bp = Blueprint("connect", __name__)

INSTANCE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # also a prompts/<name>.md file name
NAME_ERROR = "o nome do número usa só letras sem acento, números, - e _ (até 64), por exemplo: loja"


def evolution_down(error):
    """The page's answer when Evolution failed: 502 with a pt-BR line saying what to check."""
    log.warning("panel: Evolution call failed: %s", error)
    if error.status in (401, 403):
        text = "o Evolution recusou a chave: EVOLUTION_API_KEY no .env deve ser a mesma do Evolution"
    elif error.status is None:
        text = "o Evolution não respondeu; confira se ele está ligado: docker compose ps evolution"
    else:
        text = f"o Evolution respondeu {error.status}; tente de novo em alguns segundos"
    return jsonify(error=text), 502


def evolution_rows():
    settings = deps().settings
    if not (settings.evolution_api_url and settings.evolution_api_key):
        return []  # a stack with only the official channels
    return sender.fetch_instances(deps().evolution(), settings)


@bp.get("/connect")
@login_required
def connect_page():
    return render("connect.html", page="connect", default_name=deps().settings.evolution_instance or "loja")


@bp.get("/api/instances")
@login_required
def api_instances():
    """Every number: Evolution's instances with their state, then the official channels' numbers seen in chats."""
    try:
        rows = evolution_rows()
    except sender.EvolutionError as error:
        return evolution_down(error)
    numbers = [{"name": row.get("name"), "channel": "evolution", "state": row.get("connectionStatus") or "close"}
               for row in rows if isinstance(row.get("name"), str)]
    official = {(meta.get("instance"), meta.get("channel")) for meta in chatlog.chats(deps().redis)
                if meta.get("channel") and meta.get("instance")}
    numbers += [{"name": name, "channel": channel, "state": None} for name, channel in sorted(official)]
    return jsonify(numbers)


@bp.post("/api/instances")
@login_required
def api_create_instance():
    """Create a Baileys instance named `name` unless it exists: 201 created, 200 already there."""
    body = json_body()
    name = (body or {}).get("name")
    if not isinstance(name, str) or not INSTANCE_NAME.fullmatch(name.strip()):
        return jsonify(error=NAME_ERROR), 400
    name = name.strip()
    try:
        if any(row.get("name") == name for row in evolution_rows()):
            return jsonify(name=name, created=False), 200
        created = instances.create(deps().evolution(), deps().settings, name)
    except sender.EvolutionError as error:
        return evolution_down(error)
    return jsonify(name=name, created=created), 201 if created else 200


@bp.get("/api/instances/<name>/qr")
@login_required
def api_qr(name):
    """{"qr": "data:image/png;base64,…" or "", "state"}: the QR code to scan, empty once the number is linked."""
    if not INSTANCE_NAME.fullmatch(name):
        return jsonify(error=NAME_ERROR), 400
    try:
        state, qr = instances.qr_code(deps().evolution(), deps().settings, name)
    except sender.EvolutionError as error:
        if error.status == 404:
            return jsonify(error=f"não existe um número chamado {name!r}: crie-o nesta página"), 404
        return evolution_down(error)
    return jsonify(qr=qr, state=state)


@bp.post("/api/instances/<name>/logout")
@login_required
def api_logout(name):
    """Unlink the phone (Evolution's `DELETE /instance/logout/{name}`); the instance stays for a new QR code."""
    if not INSTANCE_NAME.fullmatch(name):
        return jsonify(error=NAME_ERROR), 400
    try:
        instances.logout(deps().evolution(), deps().settings, name)
    except sender.EvolutionError as error:
        if error.status == 404:
            return jsonify(error=f"não existe um número chamado {name!r}"), 404
        return evolution_down(error)
    return jsonify(name=name, state="close")
