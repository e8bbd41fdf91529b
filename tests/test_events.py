"""Outgoing events (events.py) on real processes: redis-server, gunicorn, `python worker.py`, and a loopback
receiver (FakeReceiver) that checks each event's signature like the n8n Code node in docs/events.md."""

import hashlib
import hmac
import re
import time

import pytest
import requests

import buffer
import config
import events
from conftest import CUSTOMER, INSTANCE, text_message, wait_until
from fakes import FakeReceiver

SECRET = "events-secret-0123456789abcdef"
PASSWORD = "senha-do-painel-teste"
CID = buffer.chat_ref(INSTANCE, f"{CUSTOMER}@s.whatsapp.net")


@pytest.fixture
def receiver():
    fake = FakeReceiver(SECRET)
    fake.start()
    yield fake
    fake.stop()


def events_stack(start_stack, receiver, **overrides):
    return start_stack(events_url=f"{receiver.url}/webhook/whatsapp-events", events_secret=SECRET, **overrides)


def test_events_arrive_signed_with_a_keyed_chat_id_and_no_number(start_stack, receiver, gemini, evolution):
    stack = events_stack(start_stack, receiver)
    gemini.reply_with("Abrimos às 8h.")
    stack.post(text_message("Que horas abrem?", "EVT1"))
    receiver.wait_for(2, timeout=20)
    received = {e["event"]: e for e in receiver.events}
    assert set(received) == {"message.received", "reply.sent"}
    assert received["message.received"]["text"] == "Que horas abrem?"
    assert received["reply.sent"]["text"] == "Abrimos às 8h."
    for request in receiver.requests:  # the receiver's check passed; here it is done again, independently
        assert request["headers"]["x-signature-256"] == \
            "sha256=" + hmac.new(SECRET.encode(), request["raw"], hashlib.sha256).hexdigest()
        assert re.fullmatch(r"[0-9a-f]{32}", request["headers"]["x-event-id"])
    for event in receiver.events:
        assert {"event", "at", "instance", "channel", "chat", "text"} <= set(event)
        assert (event["instance"], event["channel"]) == (INSTANCE, "evolution")
        assert event["chat"] == hmac.new(SECRET.encode(), CID.encode(), hashlib.sha256).hexdigest()[:32]
        assert "number" not in event and CUSTOMER not in str(event)
    assert received["message.received"]["at"] <= received["reply.sent"]["at"]


def test_handoff_person_and_optout_events(start_stack, receiver, gemini, evolution):
    stack = events_stack(start_stack, receiver)
    stack.post(text_message("quero falar com um atendente", "EVTH1"))
    receiver.wait_for(lambda: any(e["event"] == "handoff.requested" for e in receiver.events), timeout=20)
    stack.post(text_message("Oi, aqui é a Carla!", "EVTH2", from_me=True))
    receiver.wait_for(lambda: any(e["event"] == "person.replied" for e in receiver.events), timeout=20)
    other = "5511988887777"
    stack.post(text_message("parar", "EVTH3", number=other))
    receiver.wait_for(lambda: any(e["event"] == "optout" for e in receiver.events), timeout=20)
    by_name = {e["event"]: e for e in receiver.events}
    assert by_name["handoff.requested"]["text"] == "quero falar com um atendente"
    assert by_name["handoff.requested"]["reason"] == "o cliente pediu uma pessoa"
    assert by_name["person.replied"]["text"] == "Oi, aqui é a Carla!"
    assert by_name["person.replied"]["chat"] == by_name["handoff.requested"]["chat"]
    assert by_name["optout"]["text"] == "parar" and by_name["optout"]["chat"] != by_name["person.replied"]["chat"]
    # all three without Gemini's answer (learn.py may ask it, in the background, about the person's answer)
    assert [r for r in gemini.requests if "responseSchema" not in (r["body"].get("generationConfig") or {})] == []


def test_a_wrong_secret_is_refused_by_the_receiver(start_stack, receiver, gemini, evolution):
    """The receiver's check can fail: signed with another secret, nothing is accepted and the event is retried."""
    stack = start_stack(events_url=receiver.url, events_secret="another-secret-0123456789abcdef")
    stack.post(text_message("Oi", "EVTBAD"))
    wait_until(lambda: len(receiver.requests) >= 2, timeout=20, message="two signed tries")
    assert receiver.events == [] and {r["status"] for r in receiver.requests} == {401}


def test_number_is_sent_only_with_events_include_number(start_stack, receiver, gemini, evolution):
    stack = events_stack(start_stack, receiver, events_include_number="true")
    stack.post(text_message("Oi", "EVTNUM"))
    receiver.wait_for(2, timeout=20)
    assert {e["number"] for e in receiver.events} == {CUSTOMER}


def test_a_receiver_down_for_a_while_gets_each_event_once(start_stack, receiver, gemini, evolution):
    stack = events_stack(start_stack, receiver)
    receiver.down()
    receiver.fail_next(503, times=2)  # and, once back, it fails twice more
    for i, text in enumerate(["Oi", "tem pão?"]):
        stack.post(text_message(text, f"EVTDOWN{i}"))
    wait_until(lambda: evolution.sent_texts(), timeout=20, message="the reply while the receiver is down")
    time.sleep(2)
    assert receiver.events == []
    receiver.up()
    receiver.wait_for(3, timeout=30)
    time.sleep(2)  # no late copies
    ids = [e["_id"] for e in receiver.events]
    assert sorted(e["event"] for e in receiver.events) == ["message.received", "message.received", "reply.sent"]
    assert len(set(ids)) == len(ids) == 3
    assert [r["status"] for r in receiver.requests].count(503) == 2
    assert stack.redis.client().zcard(events.DUE) == 0 and stack.redis.client().keys("wa:event:*") == []


def panel_session(stack):
    http = requests.Session()
    page = http.get(f"{stack.url}/panel/login", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert http.post(f"{stack.url}/panel/login", data={"password": PASSWORD, "csrf_token": token},
                     timeout=10).status_code in (200, 302)
    return http, http.get(f"{stack.url}/panel/api/session", timeout=10).json()["csrf_token"]


def test_a_dead_event_is_listed_on_the_health_page_and_resent_from_the_panel(start_stack, receiver, gemini, evolution):
    stack = events_stack(start_stack, receiver, events_retry_hours="0.0005", panel_password=PASSWORD)  # 1.8 s of tries
    receiver.down()
    stack.post(text_message("Oi", "EVTDEAD"))
    http, csrf = panel_session(stack)
    dead = wait_until(lambda: len(http.get(f"{stack.url}/panel/api/events/dead").json()) == 2
                      and http.get(f"{stack.url}/panel/api/events/dead").json(), timeout=30, message="two dead events")
    assert sorted(e["event"] for e in dead) == ["message.received", "reply.sent"]
    assert all(e["tries"] >= 1 and e["error"] == "ConnectionError" for e in dead)
    page = http.get(f"{stack.url}/panel/health").text
    assert "Eventos não entregues" in page and page.count(">reenviar</button>") == 2

    receiver.up()
    first = next(e for e in dead if e["event"] == "message.received")
    answer = http.post(f"{stack.url}/panel/api/events/{first['id']}/resend", headers={"X-CSRF-Token": csrf})
    assert answer.json() == {"result": "queued"}
    receiver.wait_for(1, timeout=20)
    assert [(e["_id"], e["event"], e["text"]) for e in receiver.events] == [(first["id"], "message.received", "Oi")]
    other = next(e for e in dead if e["event"] == "reply.sent")  # the health page's button, a plain form
    form = http.post(f"{stack.url}/panel/events/{other['id']}/resend", data={"csrf_token": csrf}, allow_redirects=False)
    assert form.status_code == 303 and form.headers["Location"].endswith("/panel/health")
    receiver.wait_for(2, timeout=20)
    assert http.get(f"{stack.url}/panel/api/events/dead").json() == []
    assert http.post(f"{stack.url}/panel/api/events/{first['id']}/resend",
                     headers={"X-CSRF-Token": csrf}).status_code == 404  # not dead any more


@pytest.mark.parametrize("env, named", [
    ({"EVENTS_URL": "n8n.local/webhook"}, "EVENTS_URL: precisa começar com https://.*Exemplo: EVENTS_URL=https://"),
    ({"EVENTS_URL": "https://n8n.exemplo.com.br/webhook/x"}, "EVENTS_SECRET: precisa ser preenchido com EVENTS_URL.*Exemplo: EVENTS_SECRET="),
    ({"EVENTS_RETRY_HOURS": "0"}, "EVENTS_RETRY_HOURS: precisa ser maior que zero.*Exemplo: EVENTS_RETRY_HOURS=24"),
])
def test_wrong_event_settings_stop_start_up_in_portuguese(bot_env, env, named):
    with pytest.raises(config.SettingsError, match=named):
        config.load_settings({**bot_env, **env}, require=())
