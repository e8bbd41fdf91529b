"""The Flask webhook on fakeredis: token, body checks, dedupe and scheduling, handoff, health, logs, degraded mode."""

import copy
import json
import logging
import time

import fakeredis
import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.registry import ScheduledJobRegistry

import buffer
import chats
import webhook
from conftest import CUSTOMER, INSTANCE, TOKEN, RedisServer, free_port, load_payload, text_message, wait_until
from parser import mask
from test_parser import PAYLOAD_NAMES, json_values, paths, replaced

HUMAN = "08_v2_text_fromMe_server_ack.json"  # typed by the owner on the phone
HUMAN_CHAT = buffer.chat_ref("Ivo Teste", "558599999913@s.whatsapp.net")


def fresh(name):
    """A real payload as if it had just been sent (its items' messageTimestamp set to now)."""
    body = load_payload(name)
    for event in body if isinstance(body, list) else [body]:
        data = event.get("data")
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, dict) and "messageTimestamp" in item:
                item["messageTimestamp"] = int(time.time())
    return body


def with_text(body, text, message_id):
    body["data"]["message"] = {"conversation": text}
    body["data"]["key"]["id"] = message_id
    return body


def dead_redis():
    """A client for a port nothing listens on, that fails at once (no retry backoff)."""
    return redis_lib.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))


def scheduled(redis):
    """Chat ref → the time its job is due (`wa:due`, the only schedule)."""
    return {cid.decode(): at for cid, at in redis.zrange(buffer.DUE, 0, -1, withscores=True)}


def jobs(redis):
    queue = Queue("whatsapp", connection=redis)
    return len(scheduled(redis)) + queue.count + ScheduledJobRegistry(queue=queue).count


@pytest.fixture
def client_for(make_settings, fake_redis):
    """A test client for an app built from `make_settings(**env)` on fakeredis (or the Redis given)."""

    def build(redis=None, **env):
        app = webhook.create_app(make_settings(**env), fake_redis if redis is None else redis)
        return app.test_client()

    return build


@pytest.fixture
def client(client_for):
    return client_for()


def post(client, body, path="/webhook", token=TOKEN):
    return client.post(path, query_string={"token": token}, data=json.dumps(body),
                       content_type="application/json")


# --- who may post ---------------------------------------------------------------------------

def test_token_in_the_query_or_a_bearer_header_is_accepted(client):
    assert post(client, text_message("oi", "TOK1")).json["results"] == ["scheduled"]
    response = client.post("/webhook", json=text_message("oi", "TOK2"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.json["results"] == ["buffered"]


@pytest.mark.parametrize("query, headers", [
    ({}, {}),
    ({"token": "wrong"}, {}),
    ({}, {"Authorization": "Bearer wrong"}),
    ({}, {"Authorization": f"Basic {TOKEN}"}),
    ({"token": ""}, {"Authorization": "Bearer "}),
])
def test_missing_or_wrong_token_is_401_and_writes_nothing(client, fake_redis, query, headers):
    response = client.post("/webhook", query_string=query, headers=headers, json=text_message("oi", "BAD1"))
    assert response.status_code == 401
    assert fake_redis.keys() == []


def test_without_webhook_token_posts_are_accepted_and_a_warning_is_logged(client_for, fake_redis, caplog):
    with caplog.at_level(logging.WARNING, logger="webhook"):
        client = client_for(webhook_token="")
    assert "WEBHOOK_TOKEN is not set" in caplog.text
    assert client.post("/webhook", json=text_message("oi", "OPEN1")).json["results"] == ["scheduled"]


def test_no_warning_when_a_token_is_set(client_for, caplog):
    with caplog.at_level(logging.WARNING, logger="webhook"):
        client_for()
    assert "WEBHOOK_TOKEN" not in caplog.text


# --- what the body may be -------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"{not json", b"", b'{"event": "messages.upsert",', b"\xff\xfe"])
def test_malformed_json_is_400(client, fake_redis, data):
    response = client.post("/webhook", query_string={"token": TOKEN}, data=data, content_type="application/json")
    assert response.status_code == 400
    assert fake_redis.keys() == []


def test_body_over_max_body_bytes_is_413_before_parsing(client_for, fake_redis):
    client = client_for(max_body_bytes=2000)
    body = text_message("x" * 2000, "BIG1")
    assert post(client, body).status_code == 413
    not_json = client.post("/webhook", query_string={"token": TOKEN}, data=b"{" * 2001)
    assert not_json.status_code == 413  # 400 would mean it was parsed first
    assert fake_redis.keys() == []
    assert post(client, text_message("x" * 100, "BIG2")).status_code == 200


@pytest.mark.parametrize("name", ["13_v2_contacts_upsert_array.json", "66_v2_3_7_messages_update_READ.json"])
def test_other_events_are_200_and_touch_nothing(client, fake_redis, name):
    response = post(client, load_payload(name))
    assert (response.status_code, response.json) == (200, {"status": "ignored"})
    assert fake_redis.keys() == []


@pytest.mark.parametrize("body", [
    pytest.param("[" * 5000 + "]" * 5000, id="deeply-nested"),
    pytest.param(json.dumps({**text_message("oi", "ODD1"), "data": {**text_message("oi", "ODD1")["data"],
                                                                    "messageTimestamp": "²"}}), id="odd-digits"),
])
def test_bodies_the_bot_cannot_read_are_not_a_server_error(client, body):
    # Evolution retries every 5xx about ten times: a body we cannot read must get a 4xx or 200.
    response = client.post("/webhook", query_string={"token": TOKEN}, data=body, content_type="application/json")
    assert response.status_code < 500


# --- customer messages: dedupe and one due time per chat ---------------------------------

def test_customer_text_makes_the_chat_due_after_the_debounce_and_writes_no_rq_job(client_for, fake_redis):
    client = client_for(debounce_seconds=120)
    before = time.time()
    assert post(client, text_message("oi", "DEB1")).json["results"] == ["scheduled"]
    middle = time.time()
    assert post(client, text_message("tudo bem?", "DEB2")).json["results"] == ["buffered"]
    times = list(scheduled(fake_redis).values())
    assert len(times) == 1 and before + 120 < middle + 120 <= times[0] <= time.time() + 120  # from the last message
    queue = Queue("whatsapp", connection=fake_redis)
    assert queue.count == 0 and ScheduledJobRegistry(queue=queue).count == 0  # a worker's dispatcher enqueues it


def test_each_chat_gets_its_own_job(client, fake_redis):
    post(client, text_message("oi", "TWO1"))
    post(client, text_message("oi", "TWO2", number="5511999990002"))
    assert len(scheduled(fake_redis)) == 2


def test_duplicate_delivery_is_reported_and_adds_nothing(client, fake_redis):
    body = text_message("quanto custa?", "DUP1")
    assert post(client, body).json["results"] == ["scheduled"]
    assert post(client, body).json["results"] == ["duplicate"]
    assert fake_redis.llen(buffer.keys(buffer.chat_ref(INSTANCE, f"{CUSTOMER}@s.whatsapp.net"))["burst"]) == 1
    assert len(scheduled(fake_redis)) == 1


def test_webhook_by_events_path(client, fake_redis):
    assert post(client, text_message("oi", "PATH1"), path="/webhook/messages-upsert").json["results"] == ["scheduled"]
    assert len(scheduled(fake_redis)) == 1


def test_list_body_from_a_real_capture(client, fake_redis):
    body = fresh("02_v2_text_list_wrapped_contextinfo_source_unknown.json")
    assert post(client, body).json["results"] == ["scheduled"]
    assert len(scheduled(fake_redis)) == 1


def test_old_capture_is_not_answered(client, fake_redis):
    assert post(client, load_payload("01_v2_text_n8n_item_with_headers.json")).json["results"] == ["ignored"]
    assert jobs(fake_redis) == 0


@pytest.mark.parametrize("name", ["55_v2_2_group_participant_only.json", "56_v2_3_7_status_broadcast_text.json",
                                  "57_v2_4_0_send_message_to_newsletter.json", "49_v2_2_reactionMessage.json"])
def test_groups_broadcasts_and_reactions_are_ignored_with_nothing_buffered(client, fake_redis, name):
    assert post(client, fresh(name)).json["results"] == ["ignored"]
    assert fake_redis.keys() == []


def test_a_number_this_bot_serves_is_not_answered_by_another_instance(client, fake_redis):
    shop = text_message("oi", "LOOP1")  # `sender` is the instance's own number
    assert post(client, shop).json["results"] == ["scheduled"]
    shop_number = shop["sender"].split("@")[0]
    from_shop = text_message("Olá! Como posso ajudar?", "LOOP2", number=shop_number, instance="loja2")
    from_shop["sender"] = "5511999990003@s.whatsapp.net"  # loja2's own number
    assert post(client, from_shop).json["results"] == ["ignored"]
    assert len(scheduled(fake_redis)) == 1


# --- fromMe: a person answering pauses the bot; our own echo does not ------------------------

def paused(redis, cid):
    return chats.state(redis, cid)["state"] == "paused"


def test_owner_typing_on_the_phone_pauses_the_chat(client, fake_redis):
    post(client, text_message("oi, quanto custa?", "WAITING1", number="558599999913", instance="Ivo Teste"))
    assert len(scheduled(fake_redis)) == 1 and fake_redis.zcard(buffer.DUE) == 1
    assert post(client, fresh(HUMAN)).json["results"] == ["paused"]
    assert paused(fake_redis, HUMAN_CHAT)
    assert fake_redis.zcard(buffer.DUE) == 0  # what was waiting is dropped: no answer on top of a person


def test_our_own_echo_by_message_id_does_not_pause(client, fake_redis):
    body = fresh(HUMAN)
    buffer.note_sending(fake_redis, "Ivo Teste", HUMAN_CHAT, "r1", "fala doto")
    buffer.note_sent(fake_redis, "Ivo Teste", HUMAN_CHAT, "r1", "fala doto", body["data"]["key"]["id"])
    assert post(client, body).json["results"] == ["own"]
    assert not paused(fake_redis, HUMAN_CHAT)


def test_our_own_echo_by_text_noted_before_sending_does_not_pause(client, fake_redis):
    buffer.note_sending(fake_redis, "Ivo Teste", HUMAN_CHAT, "r1", "fala doto")
    assert post(client, fresh(HUMAN)).json["results"] == ["own"]
    assert not paused(fake_redis, HUMAN_CHAT)


def test_send_message_event_of_our_send_is_own_and_of_an_attendant_pauses(client, fake_redis):
    body = fresh("65_v2_3_7_send_message_own_sendText.json")
    cid = buffer.chat_ref("atendimento", "5511999999901@s.whatsapp.net")
    buffer.note_sending(fake_redis, "atendimento", cid, "r1", "Temos sim!")
    buffer.note_sent(fake_redis, "atendimento", cid, "r1", "Temos sim!", body["data"]["key"]["id"])
    assert post(client, body).json["results"] == ["own"]
    attendant = with_text(body, "Oi, aqui é a Júlia, da loja", "3EB0000000000000000099")  # Chatwoot, not our sendText
    assert post(client, attendant).json["results"] == ["paused"]
    assert paused(fake_redis, cid)


def test_hash_bot_from_the_owner_resumes(client, fake_redis):
    post(client, fresh(HUMAN))
    assert paused(fake_redis, HUMAN_CHAT)
    assert post(client, with_text(fresh(HUMAN), "#bot", "3EB0742228A7FA7CB97E45")).json["results"] == ["resumed"]
    assert not paused(fake_redis, HUMAN_CHAT)


# --- health and logs ------------------------------------------------------------------------

def test_health_is_200_with_redis_and_503_without(client, client_for):
    assert client.get("/health").status_code == 200
    assert client_for(redis=dead_redis()).get("/health").status_code == 503


@pytest.mark.parametrize("name, numbers", [
    ("01_v2_text_n8n_item_with_headers.json", ["556499999901"]),
    ("04_v2_3_5plus_lid_with_remoteJidAlt_long_buffer_quirk.json", ["558899999908", "10000000000007"]),
    ("63_v2_3_7_lid_only_no_phone_jid.json", ["10000000000006"]),
    (HUMAN, ["558599999913"]),
])
def test_logs_mask_numbers_and_never_show_the_apikey_or_token(client, caplog, name, numbers):
    body = fresh(name)
    body["apikey"] = "EVOLUTION-INSTANCE-SECRET-0000"
    with caplog.at_level(logging.DEBUG):
        assert post(client, body).status_code == 200
        post(client, body, token="a-wrong-token-value")
    assert caplog.text
    assert mask(numbers[0]) in caplog.text
    for secret in ("EVOLUTION-INSTANCE-SECRET-0000", TOKEN, "a-wrong-token-value", *numbers):
        assert secret not in caplog.text


# --- degraded mode: Redis is down -----------------------------------------------------------

def test_redis_down_direct_mode_answers_at_once(client_for, gemini, evolution):
    gemini.reply_with("Olá! Como posso ajudar?")
    client = client_for(redis=dead_redis())  # create_app builds the Gemini and Evolution clients from settings
    assert post(client, text_message("oi", "DOWN1")).json["results"] == ["answered directly"]
    wait_until(evolution.sent_texts, timeout=10, message="the direct reply")
    assert evolution.sent_texts() == [(INSTANCE, CUSTOMER, "Olá! Como posso ajudar?")]
    assert gemini.user_texts(0) == ["oi"]


def test_redis_down_duplicate_delivery_is_answered_once(client_for, gemini, evolution):
    client = client_for(redis=dead_redis())
    body = text_message("quanto custa?", "DOWN2")
    assert post(client, body).json["results"] == ["answered directly"]
    assert post(client, body).json["results"] == ["duplicate"]
    wait_until(evolution.sent_texts, timeout=10, message="the direct reply")
    time.sleep(0.3)  # a second answer would be on its way by now
    assert len(evolution.sent_texts()) == 1 and len(gemini.requests) == 1


def test_redis_down_refuses_from_me_ignores_groups_and_answers_neither(client_for, gemini, evolution):
    client = client_for(redis=dead_redis())
    assert post(client, fresh(HUMAN)).status_code == 503  # a person's message (or our echo) waits for Redis
    customer = text_message("oi?", "DOWNHELD1", number="558599999913", instance="Ivo Teste")
    assert post(client, customer).json["results"] == ["paused"]  # and the bot does not answer over the person
    assert post(client, fresh("55_v2_2_group_participant_only.json")).json["results"] == ["ignored"]
    time.sleep(0.3)
    assert evolution.requests == [] and gemini.requests == []


def test_redis_down_retry_mode_answers_503_and_sends_nothing(client_for, gemini, evolution):
    client = client_for(redis=dead_redis(), redis_down="retry")
    assert post(client, text_message("oi", "DOWN3")).status_code == 503
    assert post(client, load_payload("67_v2_3_7_connection_update_open.json")).status_code == 200
    time.sleep(0.3)
    assert evolution.requests == [] and gemini.requests == []


def test_redis_full_answers_503_not_direct_mode_and_accepts_the_redelivery(client_for, gemini, evolution, tmp_path):
    """At maxmemory with noeviction (as in docker-compose.yml) Redis refuses writes with OOM: the webhook must
    answer 503 so Evolution delivers again, and must not mistake a full Redis for a down one (direct mode)."""
    server = RedisServer(tmp_path, extra_args=("--maxmemory", "1", "--maxmemory-policy", "noeviction")).start()
    try:
        redis = server.client()
        client = client_for(redis=redis)  # REDIS_DOWN=direct, the default
        body = text_message("oi", "FULL1")
        response = post(client, body)
        assert response.status_code == 503 and "full" in response.json["error"]
        time.sleep(0.3)
        assert evolution.requests == [] and gemini.requests == []
        redis.config_set("maxmemory", "0")  # the operator made room
        assert post(client, body).json["results"] == ["scheduled"]
    finally:
        server.stop()


# --- fuzz: any JSON -------------------------------------------------------------------------

FRESH = {name: fresh(name) for name in PAYLOAD_NAMES}


@st.composite
def mutated_fresh_payloads(draw):
    body = copy.deepcopy(FRESH[draw(st.sampled_from(PAYLOAD_NAMES))])
    places = [path for path in paths(body) if len(path) <= 4]
    for _ in range(draw(st.integers(0, 2))):
        body = replaced(body, draw(st.sampled_from(places)), draw(json_values))
    return body


def customer_upserts(body):
    """The data items of messages.upsert events in `body` not marked fromMe: the only things that may start a job."""
    for event in body if isinstance(body, list) else [body]:
        if isinstance(event, dict) and event.get("event") == "messages.upsert":
            data = event.get("data")
            for item in data if isinstance(data, list) else [data]:
                key = item.get("key") if isinstance(item, dict) else None
                if isinstance(key, dict) and key.get("fromMe") is not True:
                    yield item


@hypothesis_settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values | mutated_fresh_payloads())
def test_any_json_gets_200_or_4xx_and_only_customer_messages_start_jobs(make_settings, body):
    redis = fakeredis.FakeRedis()
    client = webhook.create_app(make_settings(), redis).test_client()
    response = post(client, body)
    assert response.status_code < 500
    if jobs(redis):
        assert list(customer_upserts(body))
