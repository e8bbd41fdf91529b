"""The owner's settings in the panel (GET|PUT /panel/api/settings): kept in Redis over .env's, used by the next job
and the next message without a restart, refused in Portuguese when wrong. The worker runs for real on fakeredis
with the fake Evolution and Gemini."""

import time

import pytest

import buffer
import shop_settings
import worker
from conftest import CUSTOMER, INSTANCE
from test_panel import CID, PID, app, client, deliver, owner, settings  # noqa: F401 - the panel's fixtures
from test_refusals import assert_portuguese_refusal

OTHER = "5521988887777"
OTHER_CID = buffer.chat_ref(INSTANCE, f"{OTHER}@s.whatsapp.net")


def put(owner, body, status=200):
    response = owner.put("/panel/api/settings", json=body, headers={"X-CSRF-Token": owner.csrf})
    assert response.status_code == status, response.get_json()
    return response.get_json()


def answer(settings, fake_redis, *cids):
    """What the RQ job does for each chat, with the process's settings from .env: the panel's come from Redis."""
    ctx = worker.make_context(settings, fake_redis)
    for cid in cids:
        worker.process_chat(ctx, cid)


def sent(evolution):
    return [(number, text) for _, number, text in evolution.sent_texts()]


def test_settings_start_from_env_and_a_saved_value_wins_until_it_is_cleared(owner, fake_redis):
    shown = owner.get("/panel/api/settings").get_json()
    assert shown == {"bot_paused": False, "bot_active": "always", "business_hours": "", "closed_message": "",
                     "handoff_message": shown["handoff_message"], "owner_number": [], "debounce_seconds": 0,
                     "handoff_pause_minutes": 30}  # the fixture's .env: DEBOUNCE_SECONDS=0, HANDOFF_PAUSE_MINUTES=30
    assert shown["handoff_message"].startswith("Certo! Vou chamar uma pessoa")

    saved = put(owner, {"debounce_seconds": 45, "owner_number": ["+55 11 99999-0077"], "business_hours": "seg-sex 08:00-18:00"})
    assert (saved["debounce_seconds"], saved["owner_number"]) == (45, ["+55 11 99999-0077"])
    assert owner.get("/panel/api/settings").get_json() == saved
    assert fake_redis.hgetall(shop_settings.KEY) == {b"debounce_seconds": b"45", b"owner_number": b"+55 11 99999-0077",
                                                    b"business_hours": b"seg-sex 08:00-18:00"}
    assert put(owner, {"debounce_seconds": None})["debounce_seconds"] == 0  # null: back to .env's value
    assert put(owner, {})["business_hours"] == "seg-sex 08:00-18:00"  # what was not sent stays


@pytest.mark.parametrize("body, field", [
    ({"business_hours": "seg-sex 8h-18h"}, "business_hours"),
    ({"bot_active": "sometimes"}, "bot_active"),
    ({"bot_active": "outside_business_hours"}, "business_hours"),  # no hours to be outside of
    ({"debounce_seconds": -5}, "debounce_seconds"),
    ({"debounce_seconds": "dois minutos"}, "debounce_seconds"),
    ({"handoff_pause_minutes": True}, "handoff_pause_minutes"),
    ({"bot_paused": "sim"}, "bot_paused"),
    ({"owner_number": ["meu número"]}, "owner_number"),
    ({"closed_message": 42}, "closed_message"),
])
def test_a_wrong_value_is_a_portuguese_400_naming_it_and_nothing_is_stored(owner, fake_redis, body, field):
    put(owner, {"closed_message": "Fechado agora."})
    before = fake_redis.hgetall(shop_settings.KEY)
    error = put(owner, {"bot_paused": True, **body}, status=400)
    assert error["field"] == field
    assert_portuguese_refusal(error["error"], field.upper())
    assert fake_redis.hgetall(shop_settings.KEY) == before  # the good value beside it was not stored either


def test_what_is_not_a_settings_object_is_a_portuguese_400(owner):
    for body in ([1, 2], "texto"):
        assert "objeto JSON" in put(owner, body, status=400)["error"]
    bad = owner.put("/panel/api/settings", data="{not json", content_type="application/json",
                    headers={"X-CSRF-Token": owner.csrf})
    assert bad.status_code == 400 and "objeto JSON" in bad.get_json()["error"]
    assert "não é uma configuração do painel" in put(owner, {"gemini_api_key": "x"}, status=400)["error"]


def test_bot_paused_silences_every_chat_and_turning_it_off_answers_again(owner, fake_redis, settings, gemini,
                                                                          evolution):
    gemini.reply_with("Temos sim!")
    put(owner, {"bot_paused": True})
    deliver(owner, "oi, tem bolo?", "PAUSE1")
    deliver(owner, "bom dia", "PAUSE2", number=OTHER)
    answer(settings, fake_redis, CID, OTHER_CID)
    assert evolution.sent_texts() == [] and gemini.requests == []
    chat = owner.get(f"/panel/api/chats/{PID}").get_json()  # recorded and shown all the same
    assert [m["text"] for m in chat["messages"]] == ["oi, tem bolo?"]

    put(owner, {"bot_paused": False})
    deliver(owner, "alguém aí?", "PAUSE3")
    answer(settings, fake_redis, CID)
    assert sent(evolution) == [(CUSTOMER, "Temos sim!")]
    assert gemini.user_texts()[-1].endswith("alguém aí?")


def test_a_closed_message_set_in_the_panel_is_the_one_sent(owner, fake_redis, settings, gemini, evolution):
    put(owner, {"business_hours": "seg-dom 00:00-24:00", "bot_active": "outside_business_hours",
                "closed_message": "Estamos no balcão agora; já te respondemos!"})
    deliver(owner, "oi", "CLOSED1")
    answer(settings, fake_redis, CID)
    assert sent(evolution) == [(CUSTOMER, "Estamos no balcão agora; já te respondemos!")] and gemini.requests == []


def test_a_handoff_message_set_in_the_panel_is_the_one_sent(owner, fake_redis, settings, gemini, evolution):
    put(owner, {"handoff_message": "Já chamo a Ana para falar com você!"})
    deliver(owner, "quero falar com um atendente", "HAND1")
    answer(settings, fake_redis, CID)
    assert sent(evolution) == [(CUSTOMER, "Já chamo a Ana para falar com você!")]


def test_the_debounce_set_in_the_panel_counts_from_the_next_message(owner, fake_redis):
    put(owner, {"debounce_seconds": 90})
    started = time.time()
    deliver(owner, "oi", "DEB1")
    due = fake_redis.zscore(buffer.DUE, CID)
    assert started + 89 <= due <= time.time() + 91


def test_a_saved_value_that_no_longer_fits_env_is_ignored_for_env(make_settings, fake_redis):
    base = make_settings(BUSINESS_HOURS="seg-sex 08:00-18:00")
    fake_redis.hset(shop_settings.KEY, mapping={"bot_active": "outside_business_hours", "debounce_seconds": "7"})
    assert shop_settings.effective(fake_redis, base).debounce_seconds == 7
    fake_redis.hset(shop_settings.KEY, "debounce_seconds", "sete")  # written by hand: the bot keeps answering
    assert shop_settings.effective(fake_redis, base) == base


def test_the_settings_page_speaks_plainly(owner):
    put(owner, {"closed_message": "Fechado <agora>"})
    page = owner.get("/panel/settings").get_data(as_text=True)
    for label in ("Pausar o bot", "Quando o bot responde", "Horário da loja", "Mensagem de loja fechada",
                  "Mensagem ao chamar uma pessoa", "Seu número para avisos", "Tempo de espera (segundos)"):
        assert label in page
    assert "Fechado &lt;agora&gt;" in page  # the saved value, escaped


def test_another_process_save_reaches_the_webhook_copy_within_its_refresh(make_settings, fake_redis, monkeypatch):
    monkeypatch.setattr(shop_settings.Live, "SECONDS", 0.05)
    live = shop_settings.Live(fake_redis, make_settings())
    assert live.get().debounce_seconds == 1  # the tests' .env
    fake_redis.hset(shop_settings.KEY, "debounce_seconds", "33")  # saved by another webhook process's panel
    deadline = time.time() + 5
    while live.get().debounce_seconds != 33 and time.time() < deadline:
        time.sleep(0.02)
    assert live.get().debounce_seconds == 33
