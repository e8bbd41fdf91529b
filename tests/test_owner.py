"""The owner's side on real processes: alerts on a handoff, business hours, commands from the shop's
own chat, a Gemini budget nobody else can spend, degraded mode kept bounded, and erasure."""

import glob
import threading
import time

import requests

import buffer
import chat_ids
import chats
import memory
from conftest import CUSTOMER, INSTANCE, PANEL_KEY, TOKEN, load_payload, panel_session, text_message, wait_until

OWNER = "5511999990077"
SHOP = "5511999990000"  # the instance's own number: `sender` of text_message()


def sent(evolution):
    return [(number, text) for _, number, text in evolution.sent_texts()]


def test_the_owner_is_alerted_when_a_customer_asks_for_a_person(start_stack, gemini, evolution):
    stack = start_stack(owner_number="+55 11 99999-0077")
    stack.post(text_message("quero falar com um atendente sobre meu pedido", "ALERT1"))
    wait_until(lambda: len(sent(evolution)) == 2, timeout=20, message="the handoff message and the alert")
    (to_customer, handoff), (to_owner, alert) = sorted(sent(evolution), key=lambda item: item[0] == OWNER)
    assert to_customer == CUSTOMER and handoff.startswith("Certo! Vou chamar uma pessoa")
    assert to_owner == OWNER
    assert "Cliente (5511999994321)" in alert and "quero falar com um atendente sobre meu pedido" in alert
    assert gemini.requests == []


def test_outside_business_hours_only_the_bot_is_silent_during_them(start_stack, gemini, evolution):
    stack = start_stack(business_hours="mon-sun 00:00-24:00", bot_active="outside_business_hours",
                        closed_message="")
    stack.post(text_message("oi, estão abertos?", "HOURS1"))
    time.sleep(3.5)  # DEBOUNCE_SECONDS=1: a reply would be out by now
    assert sent(evolution) == [] and gemini.requests == []
    turns = memory.load_history(stack.redis.client(), buffer.chat_ref(INSTANCE, f"{CUSTOMER}@s.whatsapp.net"))
    assert turns == [{"role": "user", "text": "oi, estão abertos?"}]  # kept for whoever answers


def test_closed_message_is_sent_once_a_day_while_the_bot_is_off(start_stack, gemini, evolution):
    stack = start_stack(business_hours="mon-sun 00:00-24:00", bot_active="outside_business_hours",
                        closed_message="Estamos atendendo pelo balcão agora; já te respondemos!")
    stack.post(text_message("oi", "CLOSED1"))
    wait_until(lambda: sent(evolution), timeout=20, message="the closed message")
    stack.post(text_message("alô?", "CLOSED2"))
    time.sleep(3)
    assert sent(evolution) == [(CUSTOMER, "Estamos atendendo pelo balcão agora; já te respondemos!")]


def self_chat(text, message_id):
    """The owner typing in the shop's own "message yourself" chat: fromMe, remoteJid = the shop's number."""
    return text_message(text, message_id, number=SHOP, from_me=True)


def test_an_owner_command_in_the_self_chat_pauses_a_customer_who_never_sees_it(stack, gemini, evolution):
    cid = buffer.chat_ref(INSTANCE, f"{CUSTOMER}@s.whatsapp.net")
    assert stack.post(self_chat("#pausar +55 11 99999-4321", "3EB0SELF0000000000001"))["results"] == ["paused"]
    assert stack.post(text_message("oi, tudo bem?", "SELF1"))["results"] == ["paused"]
    time.sleep(3)
    assert customers(evolution) == [] and chats.state(stack.redis.client(), cid)["state"] == "paused"

    assert stack.post(self_chat("#bot 5511999994321", "3EB0SELF0000000000002"))["results"] == ["resumed"]
    stack.post(text_message("e agora?", "SELF2"))
    wait_until(lambda: customers(evolution), timeout=20, message="the bot answering again")
    assert [number for number, _ in customers(evolution)] == [CUSTOMER]  # the command never reached the customer
    wait_until(lambda: len(notices(evolution)) == 2, timeout=10, message="both commands confirmed")


def customers(evolution):
    return [(number, text) for number, text in sent(evolution) if number != SHOP]


def test_a_flood_from_many_numbers_cannot_spend_more_than_the_hours_budget(start_stack, gemini, evolution):
    stack = start_stack(gemini_max_calls_per_hour=3, fallback_message="Já te respondemos!", rate_limit_per_hour=0)
    body = [text_message(f"oi {i}", f"FLOOD{i}", number=f"55119777700{i:02d}") for i in range(8)]
    assert len(stack.post(body)["results"]) == 8
    wait_until(lambda: len(sent(evolution)) == 8, timeout=30, message="eight answers")
    assert len(gemini.requests) == 3
    assert sum(text == "Já te respondemos!" for _, text in sent(evolution)) == 5

    told = next(number for number, text in sent(evolution) if text == "Já te respondemos!")
    stack.post(text_message("oi de novo", "FLOOD-AGAIN", number=told))  # told once this hour already
    time.sleep(3)
    assert len(sent(evolution)) == 8 and len(gemini.requests) == 3


def test_a_body_with_too_many_messages_is_refused_whole(start_stack, gemini, evolution):
    stack = start_stack(max_messages_per_body=5)
    body = [text_message(f"oi {i}", f"BIG{i}", number=f"55119666600{i:02d}") for i in range(6)]
    stack.post(body, expect=413)
    assert stack.redis.client().zcard(buffer.DUE) == 0


def test_degraded_mode_keeps_its_queue_bounded_and_honours_the_handoff_words(start_stack, gemini, evolution):
    stack = start_stack(direct_queue_max=2, direct_reply_threads=1, gunicorn_workers=1)
    stack.redis.stop()
    gemini.hold()
    assert stack.post(text_message("oi", "DEG1", number="5511955550001"))["results"] == ["answered directly"]
    assert stack.post(text_message("oi", "DEG2", number="5511955550002"))["results"] == ["answered directly"]
    stack.post(text_message("oi", "DEG3", number="5511955550003"), expect=503)  # two waiting: full
    gemini.release()
    wait_until(lambda: len(sent(evolution)) == 2, timeout=20, message="the two direct answers")
    retry = text_message("oi", "DEG3", number="5511955550003")  # Evolution delivers the refused one again
    wait_until(lambda: requests.post(f"{stack.url}/webhook", params={"token": TOKEN}, json=retry, timeout=10).ok,
               timeout=10, message="room in the queue again")

    handoff = text_message("quero falar com um atendente", "DEG4", number="5511955550004")
    assert stack.post(handoff)["results"] == ["answered directly"]
    assert stack.post(text_message("alô?", "DEG5", number="5511955550004"))["results"] == ["paused"]
    wait_until(lambda: len(sent(evolution)) == 4, timeout=20, message="the handoff message")
    assert ("5511955550004", "Certo! Vou chamar uma pessoa da nossa equipe para falar com você. "
                             "Aguarde um instante, por favor.") in sent(evolution)
    assert len(gemini.requests) == 3


def test_forget_during_a_send_writes_nothing_back_and_the_aof_loses_the_text(start_stack, gemini, evolution):
    stack = start_stack(time_per_char_ms=10)
    redis = stack.redis.client()
    cid = buffer.chat_ref(INSTANCE, f"{CUSTOMER}@s.whatsapp.net")
    gemini.reply_with("Seu pedido de bolo confidencial está pronto.\n\nPode retirar amanhã.")
    stack.post(text_message("meu pedido secreto de bolo", "FORGET0"))
    wait_until(lambda: len(memory.load_history(redis, cid)) == 2, timeout=20, message="a first exchange in history")
    evolution.delay_next("sendPresence", 0)
    evolution.delay_next("sendPresence", 2)  # the second part is being typed when the customer is erased
    stack.post(text_message("outro segredo", "FORGET1"))
    wait_until(lambda: len(evolution.sent_texts()) == 3, timeout=20, message="the first part of the second reply")

    erased = []
    eraser = threading.Thread(target=lambda: erased.append(chats.forget_customer(redis, INSTANCE, CUSTOMER)))
    eraser.start()
    eraser.join()
    time.sleep(4)
    assert erased[0] > 0
    assert [key for key in redis.keys() if cid.encode() in key] == []  # nothing written back afterwards
    assert len(evolution.sent_texts()) == 3  # and the rest of that reply was not sent
    wait_until(lambda: not redis.info("persistence")["aof_rewrite_in_progress"], timeout=20, message="the rewrite")
    for path in glob.glob(f"{stack.redis.directory}/**/*.aof", recursive=True):
        with open(path, "rb") as aof:
            assert "pedido secreto".encode() not in aof.read(), path


def test_the_panels_erase_is_the_same_erasure_as_worker_forget(start_stack, gemini, evolution):
    stack = start_stack(panel_password="senha-do-painel-teste")
    redis = stack.redis.client()
    body = load_payload("58_v2_3_0_lid_remoteJid_with_senderPn.json")  # a phone JID seen with its '@lid' JID
    body["instance"], body["data"]["messageTimestamp"] = INSTANCE, int(time.time())
    phone = "5511999999901"
    gemini.reply_with("Claro! Anotei seu pedido.")
    stack.post(body)
    wait_until(lambda: evolution.sent_texts(), timeout=20, message="the reply")
    cid = buffer.chat_ref(INSTANCE, f"{phone}@s.whatsapp.net")
    wait_until(lambda: chats.state(redis, cid)["state"] == "idle", timeout=10, message="the chat released")
    assert redis.exists(buffer.lid_key(INSTANCE, f"{phone}@s.whatsapp.net"))
    assert memory.own_ids_of(redis, INSTANCE, cid)  # our send's id, naming the chat (its echo never came)

    pid = chat_ids.public(PANEL_KEY.encode(), cid)  # the panel's keyed id for the chat
    response = panel_session(stack, "senha-do-painel-teste").post(f"{stack.url}/panel/api/chats/{pid}/forget", timeout=10)
    assert response.status_code == 200 and response.json()["result"] == "forgotten"
    left = [key.decode() for key in redis.keys() if cid.encode() in key or phone.encode() in key]
    assert left == [] and memory.own_ids_of(redis, INSTANCE, cid) == []


def notices(evolution):
    """What the bot wrote in the shop's own chat (the owner commands' confirmations)."""
    return [text for number, text in sent(evolution) if number == SHOP]


def test_owner_commands_with_local_numbers_act_on_the_known_customer_and_are_confirmed(stack, gemini, evolution):
    redis = stack.redis.client()
    gemini.reply_with("Olá! Em que posso ajudar?")
    for i, number in enumerate(("5511987650702", "5521987650702", "551133330702")):  # known customers
        stack.post(text_message("oi", f"LOCAL{i}", number=number))
    wait_until(lambda: len(sent(evolution)) == 3, timeout=20, message="three replies")
    sao_paulo = buffer.chat_ref(INSTANCE, "5511987650702@s.whatsapp.net")

    assert stack.post(self_chat("#parar 11 98765-0702", "3EB0LOCAL000000000001"))["results"] == ["stopped"]
    assert chats.state(redis, sao_paulo)["state"] == "stopped"
    wait_until(lambda: notices(evolution), timeout=10, message="the confirmation in the self-chat")
    assert notices(evolution)[-1].startswith("✅ O bot parou de responder +55 11 98765-0702")
    assert stack.post(text_message("alô?", "LOCAL9", number="5511987650702"))["results"] == ["paused"]

    # Without the ninth digit, with +55 and brackets: the same customer.
    assert stack.post(self_chat("#bot +55 (11) 8765-0702", "3EB0LOCAL000000000002"))["results"] == ["resumed"]
    assert chats.state(redis, sao_paulo)["state"] == "idle"
    wait_until(lambda: len(notices(evolution)) == 2, timeout=10, message="the second confirmation")
    assert notices(evolution)[-1] == "✅ O bot voltou a responder +55 11 98765-0702."

    # Without the area code the line matches two customers: nothing happens, and the owner is told.
    assert stack.post(self_chat("#pausar 98765-0702", "3EB0LOCAL000000000003"))["results"] == ["not_found"]
    wait_until(lambda: len(notices(evolution)) == 3, timeout=10, message="the answer to an ambiguous number")
    assert "Não encontrei esse cliente" in notices(evolution)[-1]
    assert stack.post(self_chat("#pausar 3333-0702", "3EB0LOCAL000000000004"))["results"] == ["paused"]  # only one
    assert chats.state(redis, buffer.chat_ref(INSTANCE, "551133330702@s.whatsapp.net"))["state"] == "paused"
    assert stack.post(self_chat("#pausar 4444-0000", "3EB0LOCAL000000000005"))["results"] == ["not_found"]
    wait_until(lambda: len(notices(evolution)) == 5, timeout=10, message="every command confirmed")
    assert [chats.state(redis, buffer.chat_ref(INSTANCE, f"{n}@s.whatsapp.net"))["state"]
            for n in ("5511987650702", "5521987650702")] == ["idle", "idle"]


def test_forget_during_a_photo_download_writes_nothing_back(stack, gemini, evolution):
    redis = stack.redis.client()
    body = load_payload("33_v2_2_imageMessage_caption.json")
    body["instance"], body["data"]["messageTimestamp"] = INSTANCE, int(time.time())
    number = body["data"]["key"]["remoteJid"].split("@")[0]
    cid = buffer.chat_ref(INSTANCE, body["data"]["key"]["remoteJid"])
    photo = b"\xff\xd8\xff\xe0" + b"FOTO-CONFIDENCIAL-0123456789" * 40
    evolution.add_media(body["data"]["key"]["id"], "image/jpeg", photo, "imageMessage")
    evolution.delay_next("getBase64FromMediaMessage", 3)  # the photo is downloading when the customer is erased
    stack.post(body)
    wait_until(lambda: evolution.calls("getBase64FromMediaMessage"), timeout=20, message="the download")

    assert chats.forget_customer(redis, INSTANCE, number) > 0
    time.sleep(5)
    assert [key for key in redis.keys() if cid.encode() in key] == []
    assert evolution.sent_texts() == [] and gemini.requests == []
    wait_until(lambda: not redis.info("persistence")["aof_rewrite_in_progress"], timeout=20, message="the rewrite")
    redis.bgrewriteaof()  # whatever came after forget's rewrite is in the new file too
    time.sleep(1)
    wait_until(lambda: not redis.info("persistence")["aof_rewrite_in_progress"], timeout=20, message="the rewrite")
    for path in glob.glob(f"{stack.redis.directory}/**/*.aof", recursive=True):
        with open(path, "rb") as aof:
            assert b"FOTO-CONFIDENCIAL" not in aof.read(), path
