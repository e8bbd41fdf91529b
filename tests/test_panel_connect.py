"""The panel's Conectar WhatsApp page and its API against the fake Evolution: create, QR code, linked, disconnect.

The owner never opens Evolution's manager: the panel creates the Baileys instance, shows the QR code
Evolution answers on GET /instance/connect until the phone scans it, and logs the number out.
"""

import base64

import pytest

from conftest import EVOLUTION_KEY, INSTANCE
from test_panel import app, client, owner, post, settings  # noqa: F401 - the panel's fixtures

QR_PREFIX = "data:image/png;base64,"


def qr(owner, name):
    response = owner.get(f"/panel/api/instances/{name}/qr")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def numbers(owner):
    response = owner.get("/panel/api/instances")
    assert response.status_code == 200, response.get_json()
    return {row["name"]: (row["channel"], row["state"]) for row in response.get_json()}


def test_a_new_number_is_created_shown_as_a_qr_code_until_scanned_and_disconnected(owner, evolution):
    assert numbers(owner)[INSTANCE] == ("evolution", "open")
    assert "loja-centro" not in numbers(owner)

    created = post(owner, "/panel/api/instances", {"name": "loja-centro"})
    assert created.status_code == 201 and created.get_json() == {"name": "loja-centro", "created": True}
    call = evolution.calls("createInstance")[0]
    assert call["json"] == {"instanceName": "loja-centro", "integration": "WHATSAPP-BAILEYS", "qrcode": True}
    assert call["headers"]["apikey"] == EVOLUTION_KEY
    assert numbers(owner)["loja-centro"] == ("evolution", "connecting")
    again = post(owner, "/panel/api/instances", {"name": "loja-centro"})
    assert again.status_code == 200 and again.get_json()["created"] is False
    assert len(evolution.calls("createInstance")) == 1  # an existing name is not created twice

    first = qr(owner, "loja-centro")
    assert first["state"] == "connecting" and first["qr"].startswith(QR_PREFIX)
    assert base64.b64decode(first["qr"][len(QR_PREFIX):]).startswith(b"\x89PNG\r\n\x1a\n")
    assert evolution.calls("connect")[-1]["path"] == "/instance/connect/loja-centro"
    evolution.renew_qr("loja-centro")  # Baileys renews the code while nobody scans
    second = qr(owner, "loja-centro")
    assert second["state"] == "connecting" and second["qr"].startswith(QR_PREFIX) and second["qr"] != first["qr"]

    evolution.scan_qr("loja-centro")  # the shop's phone reads it
    assert qr(owner, "loja-centro") == {"qr": "", "state": "open"}
    assert numbers(owner)["loja-centro"] == ("evolution", "open")

    out = post(owner, "/panel/api/instances/loja-centro/logout")
    assert out.status_code == 200 and out.get_json() == {"name": "loja-centro", "state": "close"}
    assert evolution.calls("logout")[-1]["method"] == "DELETE"
    assert numbers(owner)["loja-centro"] == ("evolution", "close")
    assert post(owner, "/panel/api/instances/loja-centro/logout").status_code == 200  # already out: fine
    relink = qr(owner, "loja-centro")  # a closed number gets a fresh QR code to link again
    assert relink["state"] == "connecting" and relink["qr"].startswith(QR_PREFIX)


@pytest.mark.parametrize("name", ["loja nova", "loja/../x", "ção", "", "x" * 65, 7])
def test_a_wrong_name_is_a_portuguese_400_and_nothing_is_created(owner, evolution, name):
    response = post(owner, "/panel/api/instances", {"name": name})
    assert response.status_code == 400 and "letras sem acento" in response.get_json()["error"]
    assert evolution.calls("createInstance") == []


def test_an_unknown_number_and_evolution_in_trouble_get_portuguese_answers(owner, evolution):
    missing = owner.get("/panel/api/instances/nao-existe/qr")
    assert missing.status_code == 404 and "não existe um número chamado 'nao-existe'" in missing.get_json()["error"]
    evolution.fail_next("fetchInstances", 401)
    refused = owner.get("/panel/api/instances")
    assert refused.status_code == 502 and "EVOLUTION_API_KEY" in refused.get_json()["error"]
    evolution.down()
    try:
        down = post(owner, "/panel/api/instances", {"name": "loja"})
        assert down.status_code == 502 and "docker compose ps evolution" in down.get_json()["error"]
    finally:
        evolution.up()


def test_the_instance_calls_need_a_login_and_the_csrf_token(app, owner, evolution):
    stranger = app.test_client()
    assert stranger.get("/panel/api/instances").status_code == 401
    assert stranger.get("/panel/api/instances/shop/qr").status_code == 401
    assert post(owner, "/panel/api/instances", {"name": "loja-x"}, csrf=False).status_code == 403
    assert post(owner, "/panel/api/instances/shop/logout", csrf=False).status_code == 403
    assert evolution.calls("createInstance") == [] and evolution.calls("logout") == []


def test_the_connect_page_is_in_portuguese(owner):
    page = owner.get("/panel/connect").get_data(as_text=True)
    assert "Conectar WhatsApp" in page and "Aparelhos conectados" in page and 'id="create-form"' in page
