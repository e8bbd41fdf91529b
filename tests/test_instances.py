"""connection.update: parsed from Evolution's shapes, recorded per instance, shown in /health, alerted once."""

import copy
import json
import logging
import time

import pytest
import requests

import alerts
import instances
import parser
import webhook
from conftest import TOKEN, load_payload, wait_until

OPEN = "67_v2_3_7_connection_update_open.json"
CLOSE = "69_v2_3_7_connection_update_close_logged_out.json"
OWNER = "5511999990002"


def update(instance, state, reason=200, event="connection.update"):
    body = copy.deepcopy(load_payload(CLOSE if state == "close" else OPEN))
    body["event"], body["instance"], body["data"]["instance"] = event, instance, instance
    body["data"]["state"], body["data"]["statusReason"] = state, reason
    return body


# --- parser ------------------------------------------------------------------------------------

def test_evolution_2_3_7_open_and_close_shapes():
    assert parser.parse_connection_update(load_payload(OPEN)) == [("atendimento", "open", 200)]
    assert parser.parse_connection_update(load_payload(CLOSE)) == [("atendimento", "close", 401)]


@pytest.mark.parametrize("event", ["connection.update", "CONNECTION_UPDATE", "connection-update"])
def test_any_spelling_of_the_event_and_list_bodies(event):
    body = [update("loja2", "close", 403, event), {"event": "messages.upsert"}, "junk", update("shop", "connecting")]
    assert parser.parse_connection_update(body) == [("loja2", "close", 403), ("shop", "connecting", 200)]


def test_the_event_from_the_webhook_by_events_path():
    body = update("loja2", "close")
    del body["event"]
    assert parser.parse_connection_update(body) == []
    assert parser.parse_connection_update(body, "connection-update") == [("loja2", "close", 200)]


@pytest.mark.parametrize("body", [None, [], {}, {"event": "connection.update"}, {"event": "connection.update", "data": []},
                                  {"event": "connection.update", "data": {"state": 5, "instance": "x"}},
                                  {"event": "connection.update", "data": {"state": "open"}, "instance": ["x"]},
                                  load_payload("01_v2_text_n8n_item_with_headers.json")])
def test_anything_else_gives_nothing(body):
    assert parser.parse_connection_update(body) == []


def test_the_instance_from_the_envelope_when_data_has_none():
    body = {"event": "connection.update", "instance": {"instanceName": "velha"}, "data": {"state": "OPEN"}}
    assert parser.parse_connection_update(body) == [("velha", "open", 0)]


# --- record_state ------------------------------------------------------------------------------

def test_record_state_is_true_once_when_an_instance_closes(fake_redis):
    assert instances.record_state(fake_redis, "shop", "open", 200, 1000) is False
    assert instances.record_state(fake_redis, "shop", "close", 401, 1010) is True
    assert instances.record_state(fake_redis, "shop", "close", 401, 1020) is False  # a redelivery: no second alarm
    assert instances.record_state(fake_redis, "loja2", "close", 403, 1030) is True  # first news of it
    assert instances.record_state(fake_redis, "shop", "open", 200, 1040) is False
    assert instances.record_state(fake_redis, "shop", "close", 401, 1050) is True  # closed again
    assert instances.all_states(fake_redis) == {"shop": {"state": "close", "reason": 401, "at": 1050},
                                                "loja2": {"state": "close", "reason": 403, "at": 1030}}
    assert json.loads(fake_redis.hget("wa:instances", "shop")) == {"state": "close", "reason": 401, "at": 1050}


# --- webhook (Flask test client on fakeredis) -----------------------------------------------------

@pytest.fixture
def app_for(make_settings, fake_redis):
    def build(**env):
        return webhook.create_app(make_settings(**env), fake_redis).test_client()
    return build


def post(client, body, path="/webhook", token=TOKEN):
    return client.post(path, query_string={"token": token}, data=json.dumps(body), content_type="application/json")


def test_health_lists_each_instance_and_stays_200_when_one_is_closed(app_for, caplog):
    client = app_for()
    assert client.get("/health").json == {"status": "ok"}  # no credentials: no details
    assert client.get("/health", query_string={"token": TOKEN}).json == {"status": "ok", "redis": "ok", "instances": {}}
    assert post(client, update("shop", "open")).json == {"status": "recorded"}
    with caplog.at_level(logging.ERROR):
        assert post(client, update("loja2", "close", 401), path="/webhook/connection-update").status_code == 200
        post(client, update("loja2", "close", 401))  # delivered again
    assert client.get("/health").json == {"status": "degraded"}
    health = client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert health.status_code == 200
    states = health.json["instances"]
    assert {name: (s["state"], s["reason"]) for name, s in states.items()} == {"shop": ("open", 200),
                                                                                "loja2": ("close", 401)}
    assert abs(states["loja2"]["at"] - time.time()) < 5
    assert caplog.text.count("INSTANCE CLOSED") == 1


def test_a_closed_instance_is_alerted_through_another_open_one(app_for, evolution, fake_redis):
    client = app_for(OWNER_NUMBER=OWNER)
    post(client, update("shop", "open"))
    post(client, update("loja2", "close", 401))
    evolution.wait_for(1)
    (instance, number, text), = evolution.sent_texts()
    assert (instance, number) == ("shop", OWNER)
    assert text == alerts.instance_closed_alert("loja2", "close", 401)
    post(client, update("loja2", "open"))
    post(client, update("loja2", "close", 401))  # closed again within the hour: not alerted twice
    time.sleep(0.5)
    assert len(evolution.sent_texts()) == 1


def test_without_a_recorded_open_instance_evolution_is_asked_which_is_open(app_for, evolution):
    evolution.set_state("shop", "close", 401)
    evolution.set_state("Ivo Teste", "close", 401)
    client = app_for(OWNER_NUMBER=OWNER)
    post(client, update("shop", "close", 401))
    evolution.wait_for(1)
    assert [(i, n) for i, n, _ in evolution.sent_texts()] == [("loja2", OWNER)]
    assert len(evolution.calls("fetchInstances")) == 1


def test_no_other_open_instance_means_no_alert_and_a_warning(app_for, evolution, caplog):
    for name in ("shop", "Ivo Teste", "loja2"):
        evolution.set_state(name, "close", 401)
    client = app_for(OWNER_NUMBER=OWNER)
    with caplog.at_level(logging.WARNING):
        post(client, update("loja2", "close", 401))
        wait_until(lambda: "no other connected number" in caplog.text, timeout=5, message="the warning")
    assert evolution.sent_texts() == []


def test_without_owner_number_nothing_is_sent_or_asked(app_for, evolution):
    post(app_for(), update("loja2", "close", 401))
    time.sleep(0.3)
    assert evolution.requests == []


def test_a_refused_call_is_a_warning_at_most_once_a_minute(app_for, caplog, monkeypatch):
    client = app_for()
    monkeypatch.setitem(webhook._refused, "last", 0.0)
    with caplog.at_level(logging.WARNING, logger="webhook"):
        for _ in range(3):
            assert post(client, update("shop", "open"), token="wrong-token").status_code == 401
    assert caplog.text.count("refused a webhook call") == 1
    assert "wrong-token" not in caplog.text and TOKEN not in caplog.text
    monkeypatch.setitem(webhook._refused, "last", time.monotonic() - 61)  # a minute later
    with caplog.at_level(logging.WARNING, logger="webhook"):
        post(client, {}, token="")
    assert caplog.text.count("refused a webhook call") == 2


# --- real processes ------------------------------------------------------------------------------

def test_a_close_posted_to_the_running_webhook_shows_in_health(stack):
    assert requests.get(f"{stack.url}/health", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{stack.url}/health", params={"token": TOKEN}, timeout=5).json() == {
        "status": "ok", "redis": "ok", "instances": {}}
    assert stack.post(update("shop", "close", 401)) == {"status": "recorded"}
    assert requests.get(f"{stack.url}/health", timeout=5).json() == {"status": "degraded"}
    health = requests.get(f"{stack.url}/health", params={"token": TOKEN}, timeout=5)
    assert health.status_code == 200
    assert health.json()["instances"]["shop"]["state"] == "close"
    assert health.json()["instances"]["shop"]["reason"] == 401
    wait_until(lambda: "INSTANCE CLOSED" in stack.webhook.output(), message="the loud log line")
