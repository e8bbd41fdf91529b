"""The official channels' own code: Cloud API and Twilio payloads into Messages, signatures, their REST
calls against the fake Graph API and fake Twilio, the channel seam's keys and the channel settings."""

import hashlib
import hmac
import json
import logging

import pytest
import requests

import buffer
import channels
import chat_ids
import cloud
import config
import twilio_channel
from conftest import CUSTOMER, GRAPH_TOKEN, PANEL_KEY, PAYLOADS

CLOUD = json.loads((PAYLOADS / "cloud_api_webhooks.json").read_text())
TWILIO = json.loads((PAYLOADS / "twilio_webhooks.json").read_text())
PNID = "106540352242922"


@pytest.fixture
def settings(make_settings, graph, twilio_api):
    return make_settings(whatsapp_token=GRAPH_TOKEN, whatsapp_app_secret="app-secret-0123456789",
                         whatsapp_verify_token="verify-0123456789", whatsapp_graph_url=graph.url,
                         twilio_account_sid=twilio_api.account_sid, twilio_auth_token=twilio_api.auth_token,
                         twilio_webhook_url="https://bot.example.com/webhook/twilio", twilio_api_url=twilio_api.url,
                         send_presence="true")


# --- Cloud API payloads ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind, text, media_id", [
    ("text", "text", "Oi, vocês abrem sábado?", None),
    ("text_reply_context", "text", "Esse mesmo", None),
    ("image", "image", "Tem desse?", "1003383421387256"),
    ("audio_voice", "audio", "", "1148619076513823"),
    ("document", "document", "Meu pedido", "1239837270862361"),
    ("video", "video", "", "1166846181421424"),
    ("sticker", "sticker", "", None),
    ("location", "location", "", None),
    ("contacts", "contact", "", None),
    ("interactive_button_reply", "text", "Sim, quero", None),
    ("interactive_list_reply", "text", "Bolo médio", None),
    ("button", "text", "Quero saber mais", None),
    ("reaction", "reaction", "", None),
    ("unsupported", "unknown", "", None),
])
def test_cloud_messages_become_messages_of_the_cloud_channel(name, kind, text, media_id):
    [message] = cloud.parse_body(CLOUD[name])
    item = CLOUD[name]["entry"][0]["changes"][0]["value"]["messages"][0]
    assert (message.channel, message.instance, message.chat_id, message.reply_to) == (
        "cloud", PNID, f"{CUSTOMER}@s.whatsapp.net", CUSTOMER)
    assert (message.message_id, message.kind, message.text, message.push_name) == (item["id"], kind, text, "Cliente Teste")
    assert (message.from_me, message.is_group, message.timestamp) == (False, False, 1764590400)
    assert message.media.get("id") == media_id
    if media_id:
        assert message.media["mimetype"] == item[item["type"]]["mime_type"]


def test_cloud_document_keeps_its_file_name():
    [message] = cloud.parse_body(CLOUD["document"])
    assert message.media["file_name"] == "pedido.pdf"


def test_cloud_statuses_are_never_messages_and_a_failed_one_is_logged_with_its_code(caplog):
    with caplog.at_level(logging.ERROR):
        assert cloud.parse_body(CLOUD["status_delivered"]) == []
        assert caplog.records == []
        assert cloud.parse_body(CLOUD["status_failed"]) == []
    assert "131047" in caplog.text and "24 hours" in caplog.text
    assert CUSTOMER not in caplog.text  # masked


def test_cloud_smb_message_echo_is_the_owner_in_the_customers_chat():
    [message] = cloud.parse_body(CLOUD["smb_message_echoes"])
    assert (message.from_me, message.chat_id, message.reply_to, message.text) == (
        True, f"{CUSTOMER}@s.whatsapp.net", CUSTOMER, "Oi! Aqui é a Carla, da loja.")


@pytest.mark.parametrize("body", [{}, [], {"entry": "x"}, {"entry": [{"changes": [{"field": "messages"}]}]},
                                  {"entry": [{"changes": [{"field": "messages", "value": {"messages": [{"id": 1}]}}]}]}])
def test_cloud_malformed_bodies_give_no_messages(body):
    assert cloud.parse_body(body) == []


def test_cloud_signature_is_the_hmac_of_the_raw_body():
    raw = json.dumps(CLOUD["text"]).encode()
    good = "sha256=" + hmac.new(b"secret", raw, hashlib.sha256).hexdigest()
    assert cloud.signature_ok("secret", raw, good)
    assert not cloud.signature_ok("secret", raw + b" ", good)
    assert not cloud.signature_ok("other", raw, good)
    assert not cloud.signature_ok("secret", raw, good[7:])
    assert not cloud.signature_ok("secret", raw, "")


# --- Twilio payloads --------------------------------------------------------------------------------------

def test_twilio_text_becomes_a_message_of_the_twilio_channel():
    message = twilio_channel.parse_form(TWILIO["text"], now=1764590400)
    assert (message.channel, message.instance, message.chat_id, message.reply_to, message.message_id) == (
        "twilio", "+5511999990000", f"{CUSTOMER}@s.whatsapp.net", CUSTOMER, "SM" + "1" * 32)
    assert (message.kind, message.text, message.push_name, message.timestamp) == (
        "text", "Oi, vocês abrem sábado?", "Cliente Teste", 1764590400)


def test_twilio_image_carries_its_media_url():
    message = twilio_channel.parse_form(TWILIO["image"])
    assert (message.kind, message.text) == ("image", "Tem desse?")
    assert message.media["url"] == TWILIO["image"]["MediaUrl0"] and message.media["mimetype"] == "image/jpeg"


def test_twilio_location_is_a_location():
    assert twilio_channel.parse_form(TWILIO["location"]).kind == "location"


def test_twilio_status_callbacks_are_never_messages_and_a_failed_one_is_logged(caplog):
    with caplog.at_level(logging.ERROR):
        assert twilio_channel.parse_form(TWILIO["status_delivered"]) is None
        assert caplog.records == []
        assert twilio_channel.parse_form(TWILIO["status_failed"]) is None
    assert "63016" in caplog.text


# --- The seam ---------------------------------------------------------------------------------------------

def test_chat_ref_of_evolution_is_unchanged_and_other_channels_never_meet_it():
    jid = f"{CUSTOMER}@s.whatsapp.net"
    old = hashlib.sha1(f"{PNID}\n{jid}".encode()).hexdigest()[:20]  # the key existing histories have
    assert buffer.chat_ref(PNID, jid) == old
    refs = {buffer.chat_ref(PNID, jid, channel) for channel in ("evolution", "cloud", "twilio")}
    assert len(refs) == 3


def test_prompt_per_number_works_for_cloud_and_twilio_instances(tmp_path, make_settings):
    import ai_service

    (tmp_path / "system.md").write_text("geral")
    (tmp_path / f"{PNID}.md").write_text("loja da nuvem")
    (tmp_path / "+5511999990000.md").write_text("loja do twilio")
    settings = make_settings(system_prompt_file=tmp_path / "system.md")
    assert ai_service.load_system_prompt(settings, PNID) == "loja da nuvem"
    assert ai_service.load_system_prompt(settings, "+5511999990000") == "loja do twilio"


# --- Graph API calls --------------------------------------------------------------------------------------

def test_cloud_send_text_answers_the_wamid_and_sends_the_documented_body(settings, graph):
    wamid, _ = channels.send_text(requests.Session(), settings, "cloud", PNID, CUSTOMER, "Olá!")
    assert graph.texts() == [(PNID, CUSTOMER, "Olá!")] and wamid == graph.sent[0]["id"]
    call = graph.calls("messages")[0]
    assert call["path"] == f"/v23.0/{PNID}/messages"
    assert call["json"]["messaging_product"] == "whatsapp" and call["json"]["type"] == "text"


def test_cloud_mark_read_shows_typing_on_the_last_message_unless_send_presence_is_off(settings, graph):
    channels.mark_read(requests.Session(), settings, "cloud", PNID, [("a", "wamid.1"), ("a", "wamid.2")])
    assert graph.reads == [{"phone_number_id": PNID, "message_id": "wamid.2", "typing": "text"}]
    quiet = __import__("dataclasses").replace(settings, send_presence=False)
    channels.mark_read(requests.Session(), quiet, "cloud", PNID, [("a", "wamid.3")])
    assert graph.reads[-1] == {"phone_number_id": PNID, "message_id": "wamid.3", "typing": None}


@pytest.mark.parametrize("code, retryable", [(1, True), (2, True), (130429, True), (131056, True),
                                             (131047, False), (131026, False), (190, False)])
def test_cloud_errors_say_whether_a_retry_can_help(settings, graph, code, retryable):
    graph.fail_next("messages", code=code)
    with pytest.raises(cloud.CloudError) as caught:
        channels.send_text(requests.Session(), settings, "cloud", PNID, CUSTOMER, "Olá!")
    assert (caught.value.code, caught.value.retryable) == (code, retryable)
    assert isinstance(caught.value, channels.Error)


def test_cloud_a_wrong_token_is_refused_by_graph_and_not_retried(settings, graph):
    graph.token = "another-token"
    with pytest.raises(cloud.CloudError) as caught:
        channels.send_text(requests.Session(), settings, "cloud", PNID, CUSTOMER, "Olá!")
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (401, 190, False)
    assert "WHATSAPP_TOKEN" in str(caught.value) and GRAPH_TOKEN not in str(caught.value)


def test_cloud_media_is_fetched_with_the_token_and_stopped_past_the_limit(settings, graph):
    graph.add_media("1003383421387256", "image/jpeg", b"\xff\xd8" + b"x" * 5000)
    entry = {"message_id": "wamid.X", "media": {"id": "1003383421387256"}}
    data = channels.get_media(requests.Session(), settings, "cloud", PNID, entry, 10_000)
    assert data == b"\xff\xd8" + b"x" * 5000
    assert graph.calls("download")[0]["headers"]["authorization"] == f"Bearer {GRAPH_TOKEN}"
    with pytest.raises(channels.TooLarge):
        channels.get_media(requests.Session(), settings, "cloud", PNID, entry, 1000)


# --- Twilio REST calls ------------------------------------------------------------------------------------

def test_twilio_send_text_posts_the_form_with_basic_auth(settings, twilio_api):
    sid, _ = channels.send_text(requests.Session(), settings, "twilio", "+5511999990000", CUSTOMER, "Olá!")
    assert twilio_api.texts() == [("whatsapp:+5511999990000", f"whatsapp:+{CUSTOMER}", "Olá!")]
    assert sid == twilio_api.sent[0]["sid"]


@pytest.mark.parametrize("status, code, retryable", [(500, 20500, True), (503, 20503, True), (429, 20429, True),
                                                     (400, 63016, False), (400, 21211, False)])
def test_twilio_errors_retry_on_429_and_5xx_only(settings, twilio_api, status, code, retryable):
    twilio_api.fail_next("messages", status, code=code, message="x")
    with pytest.raises(twilio_channel.TwilioError) as caught:
        channels.send_text(requests.Session(), settings, "twilio", "+5511999990000", CUSTOMER, "Olá!")
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (status, code, retryable)


def test_twilio_wrong_credentials_are_refused(settings, twilio_api):
    twilio_api.auth_token = "another"
    with pytest.raises(twilio_channel.TwilioError) as caught:
        channels.send_text(requests.Session(), settings, "twilio", "+5511999990000", CUSTOMER, "Olá!")
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (401, 20003, False)


def test_twilio_media_follows_the_redirect_and_never_sends_credentials_elsewhere(settings, twilio_api):
    url = twilio_api.media_url()
    twilio_api.add_media(url, "image/jpeg", b"\xff\xd8image")
    assert channels.get_media(requests.Session(), settings, "twilio", "+5511999990000",
                              {"media": {"url": url}}, 10_000) == b"\xff\xd8image"
    with pytest.raises(twilio_channel.TwilioError):
        channels.get_media(requests.Session(), settings, "twilio", "+5511999990000",
                           {"media": {"url": "https://attacker.example.com/x"}}, 10_000)


def test_twilio_typing_and_read_do_nothing(settings, twilio_api):
    channels.send_presence(requests.Session(), settings, "twilio", "+5511999990000", CUSTOMER, 1000)
    channels.mark_read(requests.Session(), settings, "twilio", "+5511999990000", [("a", "SM1")])
    assert twilio_api.requests == []


# --- Settings ---------------------------------------------------------------------------------------------

BASE = {"REDIS_URL": "redis://localhost:6379/0", "GEMINI_API_KEY": "g" * 20}


def test_a_channel_with_none_of_its_settings_is_off_and_evolution_is_then_required():
    with pytest.raises(config.SettingsError, match="EVOLUTION_API_URL"):
        config.load_settings(dict(BASE), require=config.REQUIRED_FOR_REPLYING)


@pytest.mark.parametrize("env, named", [
    ({"WHATSAPP_TOKEN": "t" * 20}, "WHATSAPP_APP_SECRET, WHATSAPP_VERIFY_TOKEN: faltam para usar a API oficial da Meta"),
    ({"WHATSAPP_TOKEN": "t", "WHATSAPP_APP_SECRET": "s"}, "WHATSAPP_VERIFY_TOKEN: falta para usar"),
    ({"TWILIO_AUTH_TOKEN": "t"}, "TWILIO_ACCOUNT_SID, TWILIO_WEBHOOK_URL: faltam para usar a Twilio"),
    ({"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t", "TWILIO_WEBHOOK_URL": "bot.example.com"},
     "TWILIO_WEBHOOK_URL: precisa começar com https://"),
])
def test_a_half_configured_channel_stops_start_up_naming_what_is_missing(env, named):
    with pytest.raises(config.SettingsError) as caught:
        config.load_settings({**BASE, **env}, require=())
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_a_stack_with_only_the_cloud_api_needs_no_evolution():
    env = {**BASE, "WHATSAPP_TOKEN": "t", "WHATSAPP_APP_SECRET": "s", "WHATSAPP_VERIFY_TOKEN": "v"}
    settings = config.load_settings(env, require=("REDIS_URL", *config.REQUIRED_FOR_REPLYING))
    assert settings.whatsapp_api_version == "v23.0" and settings.whatsapp_graph_url == "https://graph.facebook.com"
    assert [module.NAME for module in channels.configured(settings)] == ["cloud"]
    assert settings.twilio_api_url == "https://api.twilio.com"


def test_fixtures_hold_fake_numbers_only():
    text = json.dumps([CLOUD, TWILIO])
    numbers = set(__import__("re").findall(r"(?<![\w.])\+?55\d{9,11}(?!\d)", text))
    assert numbers <= {"5511999994321", "+5511999994321", "5511999990000", "+5511999990000", "5511999991111"}


def test_forget_erases_a_cloud_api_customer_too(fake_redis, queue, make_settings):
    import chats

    settings = make_settings()
    [message] = cloud.parse_body(CLOUD["text"])
    message = __import__("dataclasses").replace(message, timestamp=0)
    assert buffer.add_message(fake_redis, message, settings) == "scheduled"
    cid = buffer.chat_ref(PNID, message.chat_id, "cloud")
    assert fake_redis.exists(buffer.keys(cid)["burst"])
    assert chats.forget_customer(fake_redis, PNID, "+55 11 99999-4321") > 0
    assert not fake_redis.exists(buffer.keys(cid)["burst"])


# --- The webhook routes (Flask test client on fakeredis) ---------------------------------------------------

@pytest.fixture
def cloud_client(make_settings, fake_redis, graph):
    import webhook

    settings = make_settings(whatsapp_token=GRAPH_TOKEN, whatsapp_app_secret="app-secret-0123456789",
                             whatsapp_verify_token="verify-0123456789", whatsapp_graph_url=graph.url)
    return webhook.create_app(settings, fake_redis).test_client()


def signed(raw, secret="app-secret-0123456789"):
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


def test_cloud_malformed_json_with_a_good_signature_is_400(cloud_client, fake_redis):
    raw = b'{"entry": ['
    assert cloud_client.post("/webhook/cloud", data=raw, headers=signed(raw)).status_code == 400
    assert fake_redis.keys("wa:*") == []


def test_cloud_backlog_older_than_max_message_age_is_ignored(cloud_client, fake_redis):
    raw = json.dumps(CLOUD["text"]).encode()  # its timestamp is from 2025: a redelivery of days ago
    response = cloud_client.post("/webhook/cloud", data=raw, headers=signed(raw))
    assert response.status_code == 200 and response.get_json()["results"] == ["ignored"]
    assert fake_redis.keys("wa:burst:*") == []


def test_cloud_delivery_while_redis_is_down_is_503_so_meta_delivers_again(make_settings, graph):
    import redis as redis_lib

    import webhook

    settings = make_settings(whatsapp_token=GRAPH_TOKEN, whatsapp_app_secret="app-secret-0123456789",
                             whatsapp_verify_token="verify-0123456789", whatsapp_graph_url=graph.url)
    dead = redis_lib.Redis(port=1, socket_connect_timeout=0.2)
    client = webhook.create_app(settings, dead).test_client()
    body = copy_with_now(CLOUD["text"])
    raw = json.dumps(body).encode()
    assert client.post("/webhook/cloud", data=raw, headers=signed(raw)).status_code == 503


def copy_with_now(body):
    import time

    body = json.loads(json.dumps(body))
    for change in body["entry"][0]["changes"]:
        for item in change["value"].get("messages", []):
            item["timestamp"] = str(int(time.time()))
    return body


def test_panel_answer_as_a_person_goes_out_through_the_chats_channel(make_settings, fake_redis, graph):
    import re as regex

    import webhook

    password = "panel-password-0123456789"
    settings = make_settings(whatsapp_token=GRAPH_TOKEN, whatsapp_app_secret="app-secret-0123456789",
                             whatsapp_verify_token="verify-0123456789", whatsapp_graph_url=graph.url,
                             panel_password=password)
    client = webhook.create_app(settings, fake_redis).test_client()
    raw = json.dumps(copy_with_now(CLOUD["text"])).encode()
    assert client.post("/webhook/cloud", data=raw, headers=signed(raw)).get_json()["results"] == ["scheduled"]
    page = client.get("/panel/login").get_data(as_text=True)
    token = regex.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/panel/login", data={"password": password, "csrf_token": token}).status_code == 302
    csrf = client.get("/panel/api/session").get_json()["csrf_token"]
    cid = buffer.chat_ref(PNID, f"{CUSTOMER}@s.whatsapp.net", "cloud")
    pid = chat_ids.public(PANEL_KEY.encode(), cid)  # the panel's keyed id for it

    answer = client.post(f"/panel/api/chats/{pid}/reply", json={"text": "Oi! Aqui é a Ana, da loja."},
                         headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["state"] == "paused" and answer.get_json()["id"] == graph.sent[0]["id"]
    assert graph.texts() == [(PNID, CUSTOMER, "Oi! Aqui é a Ana, da loja.")]
