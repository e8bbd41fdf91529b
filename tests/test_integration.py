"""End to end with real processes: redis-server, `gunicorn webhook:app`, `python worker.py` (RQ worker and
its dispatcher), the real google-genai SDK against FakeGemini and requests against FakeEvolution."""

import threading
import time

from conftest import CUSTOMER, load_payload, text_message, wait_until


def test_burst_of_three_gets_one_gemini_call_and_one_reply(stack, gemini, evolution):
    gemini.reply_with("Oi! O preço é R$ 25,00.")
    for i, text in enumerate(["Oi", "tudo bem?", "queria saber o preço"]):
        stack.post(text_message(text, f"BURST{i}"))
        time.sleep(0.3)

    wait_until(lambda: evolution.sent_texts(), timeout=20, message="a reply")
    time.sleep(1.5)  # a second job or reply would show up here
    assert len(gemini.requests) == 1
    assert gemini.user_texts(0) == ["Oi\ntudo bem?\nqueria saber o preço"]
    assert evolution.sent_texts() == [("shop", CUSTOMER, "Oi! O preço é R$ 25,00.")]


def test_five_deliveries_of_one_message_get_one_reply(stack, gemini, evolution):
    body = text_message("quanto custa?", "SAMEID")
    threads = [threading.Thread(target=stack.post, args=(body,)) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    wait_until(lambda: evolution.sent_texts(), timeout=20, message="a reply")
    time.sleep(1.5)
    assert len(gemini.requests) == 1
    assert len(evolution.sent_texts()) == 1


def test_two_chats_at_once_get_their_own_replies(stack, gemini, evolution):
    gemini.responder = lambda body: "resposta para: " + body["contents"][-1]["parts"][-1]["text"]
    stack.post(text_message("sou a Ana", "ANA1", number="5511988881111"))
    stack.post(text_message("sou o Bruno", "BRU1", number="5521977772222"))

    wait_until(lambda: len(evolution.sent_texts()) == 2, timeout=20, message="two replies")
    assert sorted(evolution.sent_texts()) == [
        ("shop", "5511988881111", "resposta para: sou a Ana"),
        ("shop", "5521977772222", "resposta para: sou o Bruno"),
    ]


def test_message_sent_while_gemini_answers_joins_the_burst_and_gets_one_answer(stack, gemini, evolution):
    gemini.responder = lambda body: "resposta para: " + body["contents"][-1]["parts"][-1]["text"]
    gemini.hold()
    stack.post(text_message("primeira pergunta", "WHILE1"))
    wait_until(lambda: gemini.requests, timeout=20, message="the first Gemini call")
    stack.post(text_message("e mais uma coisa", "WHILE2"))
    gemini.release()

    wait_until(lambda: len(gemini.requests) == 2, timeout=20, message="the answer made again")
    wait_until(lambda: evolution.sent_texts(), timeout=20, message="the reply")
    time.sleep(2)  # a reply to the first message alone would show up here
    assert gemini.user_texts(1) == ["primeira pergunta\ne mais uma coisa"]
    assert evolution.sent_texts() == [("shop", CUSTOMER, "resposta para: primeira pergunta\ne mais uma coisa")]


def test_owner_answering_from_the_phone_pauses_the_bot_but_its_own_echo_does_not(stack, gemini, evolution):
    gemini.reply_with("Olá! Como posso ajudar?")
    stack.post(text_message("oi", "HAND1"))
    wait_until(lambda: evolution.sent_texts(), timeout=20, message="the first reply")
    echo = {"event": "send.message", "instance": "shop", "data": evolution.sent_messages()[-1]}
    assert stack.post(echo)["results"] == ["own"]  # the bot's own send, echoed back: no pause

    stack.post(text_message("quanto custa a entrega?", "HAND2"))
    wait_until(lambda: len(evolution.sent_texts()) == 2, timeout=20, message="the second reply")

    owner = text_message("Oi! Aqui é a Carla, da loja. Já te ajudo.", "HAND3", from_me=True)
    assert stack.post(owner)["results"] == ["paused"]
    stack.post(text_message("obrigado, Carla", "HAND4"))
    time.sleep(3)  # DEBOUNCE_SECONDS=1: a reply would be out by now
    assert len(evolution.sent_texts()) == 2
    assert len(gemini.requests) == 2


def test_voice_note_reaches_gemini_as_an_audio_part(stack, gemini, evolution):
    body = load_payload("68_v2_3_7_audio_ptt_no_base64_long_bytes_objects.json")
    body["instance"] = "shop"
    body["data"]["messageTimestamp"] = int(time.time())
    voice = b"OggS\x00\x02fake-opus-voice-note"
    evolution.add_media(body["data"]["key"]["id"], "audio/ogg; codecs=opus", voice)
    stack.post(body)

    wait_until(lambda: evolution.sent_texts(), timeout=20, message="the reply to the voice note")
    assert gemini.inline_data(0) == [("audio/ogg", voice)]
    assert len(evolution.calls("getBase64FromMediaMessage")) == 1


def test_long_answer_arrives_as_ordered_parts(start_stack, gemini, evolution):
    stack = start_stack(time_per_char_ms=30)
    gemini.reply_with("Temos três tamanhos.\n\nP e M custam R$ 50.\n\nG custa R$ 60. Quer reservar?")
    stack.post(text_message("quais tamanhos e preços?", "LONG1"))

    wait_until(lambda: len(evolution.sent_texts()) == 3, timeout=20, message="three parts")
    assert [text for _, _, text in evolution.sent_texts()] == [
        "Temos três tamanhos.", "P e M custam R$ 50.", "G custa R$ 60. Quer reservar?"]
    assert [call["json"]["delay"] for call in evolution.calls("sendPresence")] == [
        len(part) * 30 for part in ("Temos três tamanhos.", "P e M custam R$ 50.", "G custa R$ 60. Quer reservar?")]
