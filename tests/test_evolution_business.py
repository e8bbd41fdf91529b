"""The Cloud API through Evolution (integration WHATSAPP-BUSINESS): Evolution re-emits Meta's messages as
`messages.upsert` (whatsapp.business.service.ts), sendText works, markMessageAsRead and sendPresence answer 400
"Method not available on WhatsApp Business API" (no noise, no retries), and Meta's refusals come back as a 201."""

import json
import time

import parser
import buffer
from conftest import CUSTOMER, load_payload, wait_until

BUSINESS = "loja2"  # one of the fake Evolution's instances, switched to WHATSAPP-BUSINESS below


def business_text(text="Oi, vocês abrem sábado?", message_id=None):
    body = load_payload("70_v2_3_6_business_text_conversation.json")
    body["instance"] = BUSINESS
    body["data"]["messageTimestamp"] = int(time.time())
    body["data"]["message"]["conversation"] = text
    if message_id:
        body["data"]["key"]["id"] = message_id
    return body


def worker_log(stack):
    return "".join(worker.output() for worker in stack.workers)


def test_business_upserts_parse_like_any_evolution_message():
    [text] = parser.parse_body(load_payload("70_v2_3_6_business_text_conversation.json"))
    assert (text.chat_id, text.reply_to, text.kind, text.text, text.channel) == (
        f"{CUSTOMER}@s.whatsapp.net", CUSTOMER, "text", "Oi, vocês abrem sábado?", "evolution")
    [image] = parser.parse_body(load_payload("71_v2_3_6_business_image_inline_base64.json"))
    assert (image.kind, image.text, image.media["mimetype"]) == ("image", "Tem desse?", "image/jpeg")  # Meta's mime_type
    assert "base64" not in json.loads(buffer.message_entry(image))["media"]  # inline bytes are never stored


def test_business_instance_replies_once_without_read_or_presence_noise_or_retries(start_stack, gemini, evolution):
    evolution.business.add(BUSINESS)
    stack = start_stack(send_presence="true", time_per_char_ms="10")
    gemini.reply_with("Abrimos sim, das 8h às 12h.")
    for i, text in enumerate(["Oi", "vocês abrem sábado?"]):
        stack.post(business_text(text, f"wamid.BUSINESS{i}"))
        time.sleep(0.3)
    wait_until(evolution.sent_texts, timeout=20, message="the reply")
    time.sleep(2)
    assert evolution.sent_texts() == [(BUSINESS, CUSTOMER, "Abrimos sim, das 8h às 12h.")]
    assert len(gemini.requests) == 1
    assert [c["status"] for c in evolution.calls("markMessageAsRead")] == [400]
    assert [c["status"] for c in evolution.calls("sendPresence")] == [400, 400]  # while thinking, before the part
    log = worker_log(stack)
    assert "Method not available" not in log
    assert [line for line in log.splitlines() if " WARNING worker" in line or " ERROR " in line] == []


def test_business_meta_refusal_in_a_201_is_not_retried_and_is_logged_loudly(start_stack, gemini, evolution):
    evolution.business.add(BUSINESS)
    stack = start_stack()
    evolution.fail_next("sendText", 201, body=load_payload("72_v2_3_6_business_sendText_201_meta_error.json"))
    stack.post(business_text(message_id="wamid.WINDOW"))
    wait_until(lambda: evolution.calls("sendText"), timeout=20, message="the send")
    time.sleep(2.5)
    assert len(evolution.calls("sendText")) == 1 and len(gemini.requests) == 1
    log = worker_log(stack)
    assert " ERROR " in log and "131047" in log and "reply dropped" in log


def test_business_meta_rate_limit_in_a_201_is_retried_without_asking_gemini_again(start_stack, gemini, evolution):
    evolution.business.add(BUSINESS)
    stack = start_stack()
    limited = {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429,
               "error_data": {"messaging_product": "whatsapp", "details": "Cloud API message throughput has been reached."},
               "fbtrace_id": "AbCdEfGh0987654321"}
    evolution.fail_next("sendText", 201, body=limited)
    stack.post(business_text(message_id="wamid.LIMITED"))
    wait_until(evolution.sent_texts, timeout=30, message="the reply after the retry")
    assert len(evolution.calls("sendText")) == 2 and len(gemini.requests) == 1


def test_business_image_reaches_gemini_from_the_webhooks_inline_copy(start_stack, gemini, evolution):
    """Such an instance's getBase64FromMediaMessage only echoes what it is given: the webhook's copy is the one."""
    evolution.business.add(BUSINESS)
    stack = start_stack()
    body = load_payload("71_v2_3_6_business_image_inline_base64.json")
    body["instance"] = BUSINESS
    body["data"]["messageTimestamp"] = int(time.time())
    gemini.reply_with("Temos sim!")
    stack.post(body)
    wait_until(evolution.sent_texts, timeout=20, message="the reply")
    assert gemini.inline_data(0) == [("image/jpeg", b"\xff\xd8\xff\xe0\x00\x10fake-jpeg-bytes")]
    assert evolution.calls("getBase64FromMediaMessage") == []
