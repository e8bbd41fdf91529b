"""The official channels on real processes (redis-server, gunicorn, `python worker.py`), with the fake Graph API,
fake Twilio and fake Gemini: the same debounce, dedupe, one reply per burst, media, retries and handoff as Evolution."""

import base64
import copy
import hashlib
import hmac
import json
import time

import pytest
import requests

import config
from twilio.request_validator import RequestValidator

from conftest import CUSTOMER, GRAPH_TOKEN, PAYLOADS, PHONE_NUMBER_ID, TWILIO_NUMBER, panel_session, wait_until

CLOUD = json.loads((PAYLOADS / "cloud_api_webhooks.json").read_text())
TWILIO = json.loads((PAYLOADS / "twilio_webhooks.json").read_text())
APP_SECRET = "test-app-secret-0123456789"
VERIFY = "test-verify-token-0123456789"
TWILIO_URL = "https://bot.example.com/webhook/twilio"


def inline_media(gemini, i=-1):
    """(mime type, bytes) Gemini got inline; the SDK sends URL-safe base64."""
    blobs = [part.get("inlineData") or part.get("inline_data") for part in gemini.parts(i)]
    return [(blob.get("mimeType") or blob.get("mime_type"), base64.urlsafe_b64decode(blob["data"]))
            for blob in blobs if blob]


def quiet(seconds=2.5):
    """Long enough for a reply that should not come to show up (DEBOUNCE_SECONDS=1 here)."""
    time.sleep(seconds)


# --- WhatsApp Cloud API --------------------------------------------------------------------------------------

@pytest.fixture
def cloud_stack(start_stack, graph):
    return start_stack(whatsapp_token=GRAPH_TOKEN, whatsapp_app_secret=APP_SECRET, whatsapp_verify_token=VERIFY,
                       whatsapp_graph_url=graph.url, send_presence="true")


def cloud_body(name="text", text=None, message_id=None, timestamp=None):
    body = copy.deepcopy(CLOUD[name])
    value = body["entry"][0]["changes"][0]["value"]
    for item in value.get("messages", []) + value.get("message_echoes", []):
        item["timestamp"] = str(int(timestamp or time.time()))
        if message_id:
            item["id"] = message_id
        if text is not None:
            item["text"]["body"] = text
    return body


def post_cloud(stack, body, secret=APP_SECRET, expect=200):
    raw = json.dumps(body).encode()
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    response = requests.post(f"{stack.url}/webhook/cloud", data=raw, timeout=20,
                             headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature})
    assert response.status_code == expect, response.text
    return response.json()


def test_cloud_handshake_answers_the_challenge_only_with_the_verify_token(cloud_stack):
    url = f"{cloud_stack.url}/webhook/cloud"
    good = requests.get(url, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"})
    assert (good.status_code, good.text) == (200, "1158201444")
    bad = requests.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1158201444"})
    assert bad.status_code == 403 and "1158201444" not in bad.text


def test_cloud_delivery_with_a_wrong_signature_is_refused_and_nothing_is_stored(cloud_stack, gemini, graph):
    post_cloud(cloud_stack, cloud_body(message_id="wamid.BADSIG"), secret="not-the-app-secret", expect=401)
    response = requests.post(f"{cloud_stack.url}/webhook/cloud", json=cloud_body(message_id="wamid.NOSIG"), timeout=10)
    assert response.status_code == 401
    quiet()
    assert cloud_stack.redis.client().keys("wa:*") == [] and gemini.requests == [] and graph.texts() == []


def test_cloud_burst_gets_one_gemini_call_and_one_reply_through_the_graph_api(cloud_stack, gemini, graph):
    gemini.reply_with("Abrimos sim, das 8h às 12h.")
    for i, text in enumerate(["Oi", "vocês abrem", "sábado?"]):
        assert post_cloud(cloud_stack, cloud_body(text=text, message_id=f"wamid.BURST{i}"))["results"] == [
            "scheduled" if i == 0 else "buffered"]
        time.sleep(0.3)
    wait_until(graph.texts, timeout=20, message="the reply")
    quiet(1.5)
    assert len(gemini.requests) == 1 and gemini.user_texts(0) == ["Oi\nvocês abrem\nsábado?"]
    assert graph.texts() == [(PHONE_NUMBER_ID, CUSTOMER, "Abrimos sim, das 8h às 12h.")]
    assert graph.reads == [{"phone_number_id": PHONE_NUMBER_ID, "message_id": "wamid.BURST2", "typing": "text"}]


THREE_PARAGRAPHS = "Temos sim!\n\nO tênis custa R$ 199.\n\nEntregamos em 2 dias."


def test_cloud_three_paragraph_answer_goes_out_as_one_message(cloud_stack, gemini, graph):
    """Each Cloud API message is billed: the parts are joined unless SPLIT_MESSAGES_CLOUD=true."""
    gemini.reply_with(THREE_PARAGRAPHS)
    post_cloud(cloud_stack, cloud_body(text="Tem o tênis?", message_id="wamid.PARAS1"))
    wait_until(graph.texts, timeout=20, message="the reply")
    quiet(1.5)
    assert graph.texts() == [(PHONE_NUMBER_ID, CUSTOMER, THREE_PARAGRAPHS)]


def test_cloud_splitting_can_be_turned_back_on(start_stack, gemini, graph):
    stack = start_stack(whatsapp_token=GRAPH_TOKEN, whatsapp_app_secret=APP_SECRET, whatsapp_verify_token=VERIFY,
                        whatsapp_graph_url=graph.url, split_messages_cloud="true")
    gemini.reply_with(THREE_PARAGRAPHS)
    post_cloud(stack, cloud_body(text="Tem o tênis?", message_id="wamid.PARAS2"))
    wait_until(lambda: len(graph.texts()) == 3, timeout=20, message="three parts")
    assert [body for _, _, body in graph.texts()] == THREE_PARAGRAPHS.split("\n\n")


def test_cloud_redelivery_is_answered_once(cloud_stack, gemini, graph):
    body = cloud_body(message_id="wamid.SAME")
    outcomes = [post_cloud(cloud_stack, body)["results"][0] for _ in range(3)]
    assert outcomes == ["scheduled", "duplicate", "duplicate"]
    wait_until(graph.texts, timeout=20, message="the reply")
    quiet(1.5)
    assert len(gemini.requests) == 1 and len(graph.texts()) == 1


def test_cloud_statuses_are_never_answered(cloud_stack, gemini, graph):
    for name in ("status_delivered", "status_failed"):
        assert post_cloud(cloud_stack, CLOUD[name])["status"] == "ignored"
    quiet()
    assert gemini.requests == [] and graph.texts() == []
    assert "131047" in cloud_stack.webhook.output()  # our failed reply, logged with Meta's code


def test_cloud_image_reaches_gemini(cloud_stack, gemini, graph):
    picture = b"\xff\xd8\xff\xe0fake-jpeg-bytes"
    graph.add_media("1003383421387256", "image/jpeg", picture)
    post_cloud(cloud_stack, cloud_body("image", message_id="wamid.IMG1"))
    wait_until(graph.texts, timeout=20, message="the reply to the picture")
    assert inline_media(gemini, 0) == [("image/jpeg", picture)]
    assert gemini.user_texts(0)[0].startswith("Tem desse?")


def test_cloud_5xx_on_send_is_retried_without_asking_gemini_again(cloud_stack, gemini, graph):
    gemini.reply_with("Temos sim!")
    graph.fail_next("messages", code=2, times=2)  # 503 Service temporarily unavailable
    graph.fail_next("messages", code=1)  # 500 An unknown error has occurred
    post_cloud(cloud_stack, cloud_body(message_id="wamid.RETRY"))
    wait_until(graph.texts, timeout=30, message="the reply after the retries")
    quiet(1.5)
    assert len(gemini.requests) == 1 and graph.texts() == [(PHONE_NUMBER_ID, CUSTOMER, "Temos sim!")]
    assert [call["status"] for call in graph.calls("messages") if call["json"].get("type") == "text"][-1] == 200
    assert sum(call["status"] >= 500 for call in graph.calls("messages")) == 3


def test_cloud_24_hour_window_error_is_not_retried_and_is_logged_loudly(cloud_stack, gemini, graph):
    graph.fail_next("messages", code=131047, times=2)  # the read receipt and the text
    post_cloud(cloud_stack, cloud_body(message_id="wamid.WINDOW"))
    wait_until(lambda: len(graph.calls("messages")) == 2, timeout=20, message="the send")
    quiet()
    assert len(graph.calls("messages")) == 2 and graph.texts() == []
    log = "".join(worker.output() for worker in cloud_stack.workers)
    assert "ERROR" in log and "131047" in log and "24 hours" in log


def test_cloud_owner_typing_in_the_business_app_pauses_the_bot(cloud_stack, gemini, graph):
    gemini.reply_with("Olá! Como posso ajudar?")
    post_cloud(cloud_stack, cloud_body(message_id="wamid.HAND1"))
    wait_until(graph.texts, timeout=20, message="the first reply")
    assert post_cloud(cloud_stack, cloud_body("smb_message_echoes", message_id="wamid.ECHO1"))["results"] == ["paused"]
    post_cloud(cloud_stack, cloud_body(text="obrigado, Carla", message_id="wamid.HAND2"))
    quiet(3)
    assert len(graph.texts()) == 1 and len(gemini.requests) == 1


def test_cloud_route_is_off_without_its_settings(stack):
    assert requests.get(f"{stack.url}/webhook/cloud", params={"hub.mode": "subscribe"}).status_code == 404
    assert requests.post(f"{stack.url}/webhook/cloud", json={}).status_code == 404
    assert requests.post(f"{stack.url}/webhook/twilio", data={}).status_code == 404


# --- Twilio ----------------------------------------------------------------------------------------------------

@pytest.fixture
def twilio_stack(start_stack, twilio_api):
    return start_stack(twilio_account_sid=twilio_api.account_sid, twilio_auth_token=twilio_api.auth_token,
                       twilio_webhook_url=TWILIO_URL, twilio_api_url=twilio_api.url)


def twilio_form(name="text", text=None, sid=None, **fields):
    form = dict(TWILIO[name])
    if sid:
        form.update(MessageSid=sid, SmsMessageSid=sid, SmsSid=sid)
    if text is not None:
        form["Body"] = text
    form.update(fields)
    return form


def post_twilio(stack, form, token="test-twilio-token-0123456789", expect=200):
    signature = RequestValidator(token).compute_signature(TWILIO_URL, form)
    response = requests.post(f"{stack.url}/webhook/twilio", data=form, headers={"X-Twilio-Signature": signature},
                             timeout=20)
    assert response.status_code == expect, response.text
    return response


def test_twilio_signature_is_checked_and_the_answer_is_empty_twiml(twilio_stack, gemini, twilio_api):
    post_twilio(twilio_stack, twilio_form(sid="SMBADSIG"), token="not-the-auth-token", expect=403)
    quiet()
    assert twilio_stack.redis.client().keys("wa:*") == [] and gemini.requests == []
    good = post_twilio(twilio_stack, twilio_form(sid="SMGOOD"))
    assert good.headers["Content-Type"].startswith("text/xml") and good.text.endswith("<Response/>")


def test_twilio_burst_gets_one_gemini_call_and_one_reply(twilio_stack, gemini, twilio_api):
    gemini.reply_with("Abrimos sim, das 8h às 12h.")
    for i, text in enumerate(["Oi", "vocês abrem", "sábado?"]):
        post_twilio(twilio_stack, twilio_form(text=text, sid=f"SMBURST{i}"))
        time.sleep(0.3)
    wait_until(twilio_api.texts, timeout=20, message="the reply")
    quiet(1.5)
    assert len(gemini.requests) == 1 and gemini.user_texts(0) == ["Oi\nvocês abrem\nsábado?"]
    assert twilio_api.texts() == [(f"whatsapp:{TWILIO_NUMBER}", f"whatsapp:+{CUSTOMER}", "Abrimos sim, das 8h às 12h.")]


def test_twilio_three_paragraph_answer_goes_out_as_one_message(twilio_stack, gemini, twilio_api):
    gemini.reply_with(THREE_PARAGRAPHS)
    post_twilio(twilio_stack, twilio_form(text="Tem o tênis?", sid="SMPARAS"))
    wait_until(twilio_api.texts, timeout=20, message="the reply")
    quiet(1.5)
    assert [body for _, _, body in twilio_api.texts()] == [THREE_PARAGRAPHS]


def test_twilio_redelivery_is_answered_once(twilio_stack, gemini, twilio_api):
    for _ in range(3):
        post_twilio(twilio_stack, twilio_form(sid="SMSAME"))
    wait_until(twilio_api.texts, timeout=20, message="the reply")
    quiet(1.5)
    assert len(gemini.requests) == 1 and len(twilio_api.texts()) == 1


def test_twilio_status_callbacks_are_never_answered(twilio_stack, gemini, twilio_api):
    for name in ("status_delivered", "status_failed"):
        post_twilio(twilio_stack, twilio_form(name))
    quiet()
    assert gemini.requests == [] and twilio_api.texts() == []
    assert "63016" in twilio_stack.webhook.output()


def test_twilio_image_reaches_gemini(twilio_stack, gemini, twilio_api):
    picture = b"\xff\xd8\xff\xe0fake-jpeg-bytes"
    url = twilio_api.media_url()
    twilio_api.add_media(url, "image/jpeg", picture)
    post_twilio(twilio_stack, twilio_form("image", sid="MMIMG1", MediaUrl0=url))
    wait_until(twilio_api.texts, timeout=20, message="the reply to the picture")
    assert inline_media(gemini, 0) == [("image/jpeg", picture)]
    assert [call["status"] for call in twilio_api.calls("media")] == [307]


def test_twilio_5xx_is_retried_without_asking_gemini_again_and_4xx_is_not(twilio_stack, gemini, twilio_api):
    gemini.reply_with("Temos sim!")
    twilio_api.fail_next("messages", 503, times=2, code=20503, message="Service Unavailable")
    post_twilio(twilio_stack, twilio_form(sid="SMRETRY"))
    wait_until(twilio_api.texts, timeout=30, message="the reply after the retries")
    quiet(1.5)
    assert len(gemini.requests) == 1 and len(twilio_api.texts()) == 1
    assert [call["status"] for call in twilio_api.calls("messages")] == [503, 503, 201]

    twilio_api.fail_next("messages", 400, code=21211, message="The 'To' number is not a valid phone number.")
    post_twilio(twilio_stack, twilio_form(sid="SM4XX", text="outra pergunta"))
    wait_until(lambda: len(twilio_api.calls("messages")) == 4, timeout=20, message="the refused send")
    quiet()
    assert [call["status"] for call in twilio_api.calls("messages")] == [503, 503, 201, 400]


# --- Both at once, beside Evolution ----------------------------------------------------------------------------

def test_one_stack_serves_evolution_cloud_and_twilio_with_separate_chats(start_stack, gemini, evolution, graph,
                                                                          twilio_api):
    from conftest import text_message

    stack = start_stack(whatsapp_token=GRAPH_TOKEN, whatsapp_app_secret=APP_SECRET, whatsapp_verify_token=VERIFY,
                        whatsapp_graph_url=graph.url, twilio_account_sid=twilio_api.account_sid,
                        twilio_auth_token=twilio_api.auth_token, twilio_webhook_url=TWILIO_URL,
                        twilio_api_url=twilio_api.url)
    gemini.responder = lambda body: "resposta para: " + body["contents"][-1]["parts"][-1]["text"]
    stack.post(text_message("pela evolution", "EVO1", instance="shop"))
    post_cloud(stack, cloud_body(text="pela nuvem", message_id="wamid.BOTH"))
    post_twilio(stack, twilio_form(text="pelo twilio", sid="SMBOTH"))
    wait_until(lambda: evolution.sent_texts() and graph.texts() and twilio_api.texts(), timeout=20,
               message="three replies")
    assert evolution.sent_texts() == [("shop", CUSTOMER, "resposta para: pela evolution")]
    assert graph.texts() == [(PHONE_NUMBER_ID, CUSTOMER, "resposta para: pela nuvem")]
    assert [text for _, _, text in twilio_api.texts()] == ["resposta para: pelo twilio"]
    assert len(gemini.requests) == 3


def test_cloud_handoff_and_the_owners_alert_go_through_the_cloud_api(start_stack, gemini, graph):
    stack = start_stack(whatsapp_token=GRAPH_TOKEN, whatsapp_app_secret=APP_SECRET, whatsapp_verify_token=VERIFY,
                        whatsapp_graph_url=graph.url, owner_number="+55 11 99999-1111")
    post_cloud(stack, cloud_body(text="quero falar com um atendente", message_id="wamid.HUMAN"))
    wait_until(lambda: len(graph.texts()) == 2, timeout=20, message="the handoff message and the owner's alert")
    assert gemini.requests == []
    to_customer = [text for pnid, to, text in graph.texts() if to == CUSTOMER and pnid == PHONE_NUMBER_ID]
    to_owner = [text for pnid, to, text in graph.texts() if to == "5511999991111" and pnid == PHONE_NUMBER_ID]
    assert to_customer == [config.PT_HANDOFF]
    assert len(to_owner) == 1 and "falar com uma pessoa" in to_owner[0]


# --- issue 19: what a person answers from the panel is remembered on every channel -------------------------

@pytest.mark.parametrize("channel", ["cloud", "twilio"])
def test_a_persons_answer_from_the_panel_reaches_history_exactly_once(channel, start_stack, gemini, graph, twilio_api):
    if channel == "cloud":
        stack = start_stack(whatsapp_token=GRAPH_TOKEN, whatsapp_app_secret=APP_SECRET, whatsapp_verify_token=VERIFY,
                            whatsapp_graph_url=graph.url, panel_password="senha-do-painel-teste")
        customer = lambda text, i: post_cloud(stack, cloud_body(text=text, message_id=f"wamid.PANEL{i}"))  # noqa: E731
        texts = graph.texts
    else:
        stack = start_stack(twilio_account_sid=twilio_api.account_sid, twilio_auth_token=twilio_api.auth_token,
                            twilio_webhook_url=TWILIO_URL, twilio_api_url=twilio_api.url,
                            panel_password="senha-do-painel-teste")
        customer = lambda text, i: post_twilio(stack, twilio_form(text=text, sid=f"SMPANEL{i}"))  # noqa: E731
        texts = twilio_api.texts
    gemini.reply_with("Vou confirmar o preço para você.")
    customer("quanto custa o bolo grande?", 1)
    wait_until(texts, timeout=20, message="the bot's reply")

    panel = panel_session(stack, "senha-do-painel-teste")
    cid = panel.get(f"{stack.url}/panel/api/chats", timeout=10).json()["chats"][0]["id"]
    answer = panel.post(f"{stack.url}/panel/api/chats/{cid}/reply", json={"text": "O grande custa R$ 80."}, timeout=20)
    assert answer.status_code == 200, answer.text
    assert panel.post(f"{stack.url}/panel/api/chats/{cid}/resume", timeout=10).json()["state"] == "idle"
    customer("e o pequeno?", 2)
    wait_until(lambda: len(texts()) == 3, timeout=20, message="the bot answering after the hand-back")

    said = [(c["role"], c["parts"][0]["text"]) for c in gemini.requests[-1]["body"]["contents"]]
    assert said == [("user", "quanto custa o bolo grande?"),  # one model turn: the bot's and the person's answers
                    ("model", "Vou confirmar o preço para você.\nO grande custa R$ 80."), ("user", "e o pequeno?")]
