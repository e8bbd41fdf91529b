"""alerts.py: WhatsApp messages to OWNER_NUMBER through FakeEvolution, limited per cause with fakeredis."""

import logging

import pytest

import alerts
import sender
from conftest import INSTANCE

OWNER = "5511999990002"


@pytest.fixture
def session():
    return sender.make_session()


def test_alert_goes_to_every_owner_number_on_the_given_instance(make_settings, fake_redis, evolution, session):
    settings = make_settings(OWNER_NUMBER="+55 11 99999-0002, 5511999990003")
    text = alerts.handoff_alert("Maria", "5511999994321", "pediu um atendente", "quero falar com alguém")
    assert alerts.notify_owner(session, settings, fake_redis, "loja2", text) == 2
    assert evolution.sent_texts() == [("loja2", OWNER, text), ("loja2", "5511999990003", text)]
    bodies = [call["json"] for call in evolution.calls("sendText")]
    assert bodies == [{"number": OWNER, "text": text, "linkPreview": False},
                      {"number": "5511999990003", "text": text, "linkPreview": False}]
    assert all(call["headers"]["apikey"] == settings.evolution_api_key for call in evolution.calls("sendText"))


def test_handoff_alert_says_who_with_the_full_number_why_and_the_last_words():
    text = alerts.handoff_alert("Maria", "5511999994321", "pediu um atendente", "  quero falar com alguém ")
    assert "Maria (5511999994321)" in text
    assert "Motivo: pediu um atendente" in text
    assert "“quero falar com alguém”" in text
    assert "wa.me/5511999994321" in text
    assert "Mensagem do cliente" not in alerts.handoff_alert("", "5511999994321", "opt-out", "")
    assert alerts.handoff_alert("", "5511999994321", "x", "a" * 900).count("a" * 500 + "…") == 1


def test_builders_are_portuguese_and_name_the_cause():
    assert "Motivo: Gemini answered 400" in alerts.fallback_alert("Gemini answered 400")
    closed = alerts.instance_closed_alert("loja2", "close", 401)
    assert "\"loja2\"" in closed and "desconectado" in closed and "QR code" in closed
    assert "bloqueou" in alerts.instance_closed_alert("loja2", "close", 403)


def test_with_a_cause_at_most_one_alert_an_hour(make_settings, fake_redis, evolution, session):
    settings = make_settings(OWNER_NUMBER=OWNER)
    assert alerts.notify_owner(session, settings, fake_redis, INSTANCE, "primeiro", cause="fallback") == 1
    assert alerts.notify_owner(session, settings, fake_redis, INSTANCE, "segundo", cause="fallback") == 0
    assert alerts.notify_owner(session, settings, fake_redis, INSTANCE, "outra causa", cause="closed:loja2") == 1
    assert alerts.notify_owner(session, settings, fake_redis, INSTANCE, "sem causa") == 1
    assert [t for _, _, t in evolution.sent_texts()] == ["primeiro", "outra causa", "sem causa"]
    assert 3590 < fake_redis.ttl("wa:alert:fallback") <= 3600
    fake_redis.delete("wa:alert:fallback")  # an hour later
    assert alerts.notify_owner(session, settings, fake_redis, INSTANCE, "de novo", cause="fallback") == 1


def test_no_owner_number_sends_nothing(make_settings, fake_redis, evolution, session):
    assert alerts.notify_owner(session, make_settings(), fake_redis, INSTANCE, "oi", cause="x") == 0
    assert evolution.requests == [] and fake_redis.keys() == []


@pytest.mark.parametrize("fault", [401, 500, "down"])
def test_a_failed_alert_is_logged_never_raised(make_settings, fake_redis, evolution, session, caplog, fault):
    settings = make_settings(OWNER_NUMBER=OWNER, EVOLUTION_API_KEY="wrong-evolution-key-000" if fault == 401 else "test-evolution-key")
    if fault == "down":
        evolution.down()
    elif fault == 500:
        evolution.fail_next("sendText", 500)
    with caplog.at_level(logging.ERROR, logger="alerts"):
        assert alerts.notify_owner(session, settings, fake_redis, INSTANCE, "oi") == 0
    assert "alert to the owner 5511*****0002" in caplog.text
    assert OWNER not in caplog.text
    assert evolution.sent_texts() == []


def test_an_unknown_instance_is_refused_by_evolution_and_logged(make_settings, fake_redis, evolution, session, caplog):
    with caplog.at_level(logging.ERROR, logger="alerts"):
        assert alerts.notify_owner(session, make_settings(OWNER_NUMBER=OWNER), fake_redis, "nope", "oi") == 0
    assert "404" in caplog.text


def test_the_customers_words_are_marked_as_theirs_and_no_link_in_them_is_clickable():
    text = alerts.handoff_alert("www.banco.example.com", "5511999994321", "pediu um atendente",
                                "Pague em https://evil.example.com/pix\nO bot ficou em silêncio: wa.me/5599 R$ 45.00")
    customer = next(line for line in text.splitlines() if line.startswith("Mensagem do cliente: “"))
    assert "hxxps[:]//evil[.]example[.]com/pix" in customer and "wa[.]me/5599" in customer and "45.00" in customer
    assert "www[.]banco[.]example[.]com (5511999994321)" in text
    assert text.count("O bot ficou em silêncio") == 2 and text.splitlines()[-1].endswith("wa.me/5511999994321")
    for link in ("http://", "https://", "www.", ".com", "wa.me/5599"):
        assert link not in text.replace("wa.me/5511999994321", ""), link
