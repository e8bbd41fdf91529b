"""The bot's promise on real processes (redis-server, gunicorn, `python worker.py`, fake Evolution and
Gemini): a person always wins, nothing is lost, nothing is said twice."""

import copy
import threading
import time

import requests

import buffer
import chatlog
import chats
import memory
from conftest import CUSTOMER, INSTANCE, TOKEN, load_payload, text_message, wait_until

JID = f"{CUSTOMER}@s.whatsapp.net"
CID = buffer.chat_ref(INSTANCE, JID)


def owner(text, message_id):
    """The owner typing in the customer's chat on the phone (fromMe upsert, like payload 08)."""
    return text_message(text, message_id, from_me=True)


def echo(evolution, i=-1, **key):
    """Evolution's `send.message` event for a message sent through its API (payload 65's shape)."""
    data = copy.deepcopy(evolution.sent_messages()[i])
    data["key"].update(key)
    return {**echo_shape(), "data": data}


def echo_shape():
    return {"event": "send.message", "instance": INSTANCE, "sender": "5511999990000@s.whatsapp.net",
            "server_url": "http://localhost:8080", "date_time": "2026-11-23T12:00:00.000Z",
            "destination": "http://webhook:8000/webhook", "apikey": "FFFFFFFFFFFF-FFFF-FFFF-FFFFFFFFFFFF"}


def bot_is_back(stack, evolution, owner_id, customer_id, replies):
    """`#bot` from the owner, then a customer message gets the bot's answer (the `replies`-th text sent)."""
    assert stack.post(owner("#bot", owner_id))["results"] == ["resumed"]
    stack.post(text_message("voltei", customer_id))
    wait_until(lambda: len(sent(evolution)) == replies, timeout=20, message="the bot answering again")


def state(stack, cid=CID):
    return chats.state(stack.redis.client(), cid)["state"]


def sent(evolution):
    return [text for _, _, text in evolution.sent_texts()]


def quiet(seconds=2.5):
    """Long enough for a reply that should not come to show up (DEBOUNCE_SECONDS=1 here)."""
    time.sleep(seconds)


# --- a person's action always wins over a running job ----------------------------------------------

def test_owner_answering_during_generation_then_bot_never_sends_the_stale_answer(stack, gemini, evolution):
    gemini.reply_with("Resposta do robô")
    gemini.hold()
    stack.post(text_message("quanto custa o bolo grande?", "STALE1"))
    wait_until(lambda: gemini.requests, timeout=20, message="Gemini asked")
    assert stack.post(owner("Fica R$ 80 o grande", "3EB0STALE0000000000001"))["results"] == ["paused"]
    assert stack.post(owner("#bot", "3EB0STALE0000000000002"))["results"] == ["resumed"]
    gemini.release()
    quiet()
    assert sent(evolution) == []

    stack.post(text_message("e o pequeno?", "STALE2"))  # the bot is back, and knows what the owner said
    wait_until(lambda: sent(evolution), timeout=20, message="the next reply")
    contents = gemini.requests[-1]["body"]["contents"]
    assert [(c["role"], c["parts"][0]["text"]) for c in contents] == [
        ("user", "quanto custa o bolo grande?"), ("model", "Fica R$ 80 o grande"), ("user", "e o pequeno?")]


def test_owner_answering_between_parts_stops_the_rest_of_the_reply(start_stack, gemini, evolution):
    stack = start_stack(time_per_char_ms=200)  # each part is typed about 2 s, by no worker: its job comes after
    gemini.reply_with("Parte um.\n\nParte dois.\n\nParte três.")
    stack.post(text_message("me explica tudo", "PARTS1"))
    wait_until(lambda: len(evolution.calls("sendPresence")) == 2, timeout=20, message="the second part being typed")
    assert sent(evolution) == ["Parte um."]
    assert stack.post(owner("Deixa que eu explico", "3EB0PARTS0000000000001"))["results"] == ["paused"]
    quiet(4)
    assert sent(evolution) == ["Parte um."]
    turns = memory.load_history(stack.redis.client(), CID)
    assert [(t["role"], t["text"]) for t in turns] == [
        ("user", "me explica tudo"), ("model", "Parte um."), ("model", "Deixa que eu explico")]


def test_stop_while_the_handoff_message_goes_out_lasts_until_bot(stack, gemini, evolution):
    evolution.delay_next("sendText", 2)
    stack.post(text_message("quero falar com um atendente", "STOP1"))
    wait_until(lambda: evolution.calls("sendText"), timeout=20, message="the handoff message on its way")
    assert stack.post(owner("#parar", "3EB0STOP00000000000001"))["results"] == ["stopped"]
    wait_until(lambda: sent(evolution), timeout=10, message="the handoff message")
    quiet()
    redis = stack.redis.client()
    assert state(stack) == "stopped" and redis.ttl(buffer.keys(CID)["paused"]) == -1  # not the handoff's timed pause

    bot_is_back(stack, evolution, "3EB0STOP00000000000002", "STOP2", replies=2)


def test_owner_text_equal_to_an_earlier_bot_text_is_the_owners(stack, gemini, evolution):
    gemini.reply_with("Obrigado!")
    stack.post(text_message("valeu pela ajuda", "THX1"))
    wait_until(lambda: sent(evolution), timeout=20, message="the bot's thanks")
    assert stack.post(echo(evolution))["results"] == ["own"]
    assert stack.post(owner("Obrigado!", "3EB0THX00000000000001"))["results"] == ["paused"]
    assert state(stack) == "paused"


def test_own_echo_under_the_phone_jid_of_a_lid_chat_before_the_id_is_known(stack, gemini, evolution):
    body = load_payload("63_v2_3_7_lid_only_no_phone_jid.json")
    body["instance"] = INSTANCE
    body["data"]["messageTimestamp"] = int(time.time())
    gemini.reply_with("Claro! O que você procura?")
    evolution.delay_next("sendText", 2)  # Evolution posts send.message before answering sendText
    stack.post(body)
    wait_until(lambda: evolution.calls("sendText"), timeout=20, message="the reply on its way")
    early_echo = {**echo_shape(), "data": {
        "key": {"remoteJid": f"{CUSTOMER}@s.whatsapp.net", "fromMe": True, "id": "3EB0LIDECHO00000000001"},
        "pushName": "Você", "status": "PENDING", "message": {"conversation": "Claro! O que você procura?"},
        "messageType": "conversation", "messageTimestamp": int(time.time()), "source": "web"}}
    assert stack.post(early_echo)["results"] == ["own"]
    wait_until(lambda: sent(evolution), timeout=10, message="the reply")
    lid_chat = buffer.chat_ref(INSTANCE, "10000000000006@lid")
    wait_until(lambda: state(stack, lid_chat) == "idle", timeout=10, message="the lid chat released, not paused")
    assert state(stack) == "idle"  # and the phone JID's chat was not taken for a person answering


def test_a_part_repeated_on_purpose_is_sent_each_time(start_stack, gemini, evolution):
    stack = start_stack(time_per_char_ms=2000)  # the third part is typed 2 s: the first part's echo arrives meanwhile
    gemini.reply_with("😊\n\nAté logo!\n\n😊")
    stack.post(text_message("tchau", "EMOJI1"))
    wait_until(lambda: len(sent(evolution)) == 2, timeout=20, message="two parts")
    assert stack.post(echo(evolution, 0))["results"] == ["own"]
    wait_until(lambda: len(sent(evolution)) == 3, timeout=10, message="the third part")
    assert sent(evolution) == ["😊", "Até logo!", "😊"]


# --- handing over and taking back, like a colleague ---------------------------------------------------

def test_ordinary_questions_about_a_pessoa_get_answers_and_explicit_requests_hand_over(stack, gemini, evolution):
    gemini.responder = lambda body: "Resposta: " + body["contents"][-1]["parts"][-1]["text"]
    questions = ["Quanto é o rodízio por pessoa?", "é para uma pessoa só", "Tem o livro do Fernando Pessoa?",
                 "Emitem nota para pessoa física?"]
    for i, question in enumerate(questions):
        stack.post(text_message(question, f"PESSOA{i}", number=f"55119888800{i:02d}"))
    stack.post(text_message("quero falar com um atendente, por favor", "PESSOA9", number="5511988880099"))

    wait_until(lambda: len(sent(evolution)) == 5, timeout=20, message="five replies")
    assert sorted(sent(evolution)) == sorted(
        [f"Resposta: {q}" for q in questions] + ["Certo! Vou chamar uma pessoa da nossa equipe para falar com você. "
                                                  "Aguarde um instante, por favor."])
    assert len(gemini.requests) == 4
    handed = buffer.chat_ref(INSTANCE, "5511988880099@s.whatsapp.net")
    wait_until(lambda: state(stack, handed) == "paused", timeout=10, message="the chat handed over")
    wait_until(lambda: state(stack, buffer.chat_ref(INSTANCE, "5511988880000@s.whatsapp.net")) == "idle",
               timeout=10, message="an ordinary chat released")


def transfer_call(reason):
    """Gemini's answer when the model calls our tool (a candidate whose part is a functionCall)."""
    return {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "transfer_to_human", "args": {"reason": reason}}}]},
        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 8, "totalTokenCount": 58},
        "modelVersion": "gemini-flash-latest", "responseId": "fc-1"}


def test_gemini_calling_transfer_to_human_hands_the_chat_over_once(start_stack, gemini, evolution):
    stack = start_stack(handoff_message="Vou passar para a nossa equipe, só um instante.")
    gemini.responder = lambda body: transfer_call("pedido veio errado")
    stack.post(text_message("meu pedido veio errado e ninguém resolve", "TOOL1"))
    wait_until(lambda: state(stack) == "paused", timeout=20, message="the chat handed over")
    declared = gemini.requests[0]["body"]["tools"][0]["functionDeclarations"]
    assert [tool["name"] for tool in declared] == ["transfer_to_human"]

    assert stack.post(text_message("alô?", "TOOL2"))["results"] == ["paused"]
    quiet()
    assert sent(evolution) == ["Vou passar para a nossa equipe, só um instante."]
    assert len(gemini.requests) == 1 and state(stack) == "paused"


def test_optout_says_what_happens_and_bot_from_the_owner_brings_the_bot_back(stack, gemini, evolution):
    gemini.reply_with("Oi! Em que posso ajudar?")
    stack.post(text_message("parar", "OUT1"))
    wait_until(lambda: state(stack) == "stopped", timeout=20, message="the opt-out confirmed")
    assert sent(evolution) == ["Tudo bem! Não vou mais responder automaticamente nesta conversa. "
                               "Suas mensagens continuam chegando para a nossa equipe."]
    assert stack.post(text_message("oi", "OUT2"))["results"] == ["opted_out"]
    quiet()
    assert len(sent(evolution)) == 1 and gemini.requests == []

    bot_is_back(stack, evolution, "3EB0OUT0000000000000001", "OUT3", replies=2)


def test_chatwoot_attendant_answer_is_kept_in_history_for_when_the_bot_resumes(stack, gemini, evolution):
    gemini.reply_with("Olá!")
    stack.post(text_message("oi", "CW1"))
    wait_until(lambda: sent(evolution), timeout=20, message="the first reply")
    attendant = echo(evolution, id="3EB0CHATWOOT0000000001")
    attendant["data"]["message"] = {"conversation": "Aqui é a Júlia: o frete para o centro é grátis."}
    assert stack.post(attendant)["results"] == ["paused"]
    assert stack.post(text_message("obrigado, Júlia", "CW2"))["results"] == ["paused"]
    assert stack.post(owner("#bot", "3EB0CHATWOOT0000000002"))["results"] == ["resumed"]
    stack.post(text_message("e para o bairro?", "CW3"))
    wait_until(lambda: len(sent(evolution)) == 2, timeout=20, message="the reply after resuming")
    texts = [(c["role"], c["parts"][0]["text"]) for c in gemini.requests[-1]["body"]["contents"]]
    assert texts == [("user", "oi"), ("model", "Olá!\nAqui é a Júlia: o frete para o centro é grátis."),
                     ("user", "obrigado, Júlia\ne para o bairro?")]


def test_what_gemini_understood_of_a_voice_note_stays_in_history(stack, gemini, evolution):
    body = load_payload("68_v2_3_7_audio_ptt_no_base64_long_bytes_objects.json")
    body["instance"] = INSTANCE
    body["data"]["messageTimestamp"] = int(time.time())
    evolution.add_media(body["data"]["key"]["id"], "audio/ogg; codecs=opus", b"OggS\x00\x02fake-voice")
    gemini.reply_with("[[mídia: a cliente pergunta se tem bolo de chocolate]]\n\nTemos sim!")
    stack.post(body)
    wait_until(lambda: sent(evolution), timeout=20, message="the reply to the voice note")
    assert sent(evolution) == ["Temos sim!"]
    number = body["data"]["key"]["remoteJid"].split("@")[0]
    cid = buffer.chat_ref(INSTANCE, f"{number}@s.whatsapp.net")
    wait_until(lambda: memory.load_history(stack.redis.client(), cid), timeout=10, message="the exchange in history")
    turns = memory.load_history(stack.redis.client(), cid)
    assert turns[0] == {"role": "user", "text": "[áudio]\n[a cliente pergunta se tem bolo de chocolate]"}


# --- no stale answers, no endless waiting ------------------------------------------------------------

def test_regeneration_is_capped_by_max_regenerations(stack, gemini, evolution):
    gemini.responder = lambda body: "sobre: " + body["contents"][-1]["parts"][-1]["text"].replace("\n", " + ")
    gemini.hold()
    stack.post(text_message("um", "REGEN1"))
    wait_until(lambda: len(gemini.requests) == 1, timeout=20, message="Gemini asked")
    stack.post(text_message("dois", "REGEN2"))
    gemini.release()
    time.sleep(0.3)
    gemini.hold()
    wait_until(lambda: len(gemini.requests) == 2, timeout=20, message="the answer made again")
    stack.post(text_message("três", "REGEN3"))  # MAX_REGENERATIONS=1: this one is answered next
    gemini.release()
    wait_until(lambda: len(sent(evolution)) == 2, timeout=20, message="two replies")
    assert sent(evolution) == ["sobre: um + dois", "sobre: três"]
    assert len(gemini.requests) == 3


def test_a_customer_who_never_pauses_is_answered_within_max_wait(start_stack, gemini, evolution):
    stack = start_stack(debounce_seconds=2, max_wait_seconds=4)
    gemini.reply_with("Já te respondo tudo!")
    for i in range(9):  # a message a second: never 2 s of quiet
        stack.post(text_message(f"mais uma coisa {i}", f"CHATTY{i}"))
        time.sleep(1)
        if sent(evolution):
            break
    assert sent(evolution) == ["Já te respondo tudo!"], "answered while the customer was still typing"
    assert gemini.user_texts(0)[0].startswith("mais uma coisa 0\nmais uma coisa 1")


# --- nothing is lost ----------------------------------------------------------------------------------

def test_a_burst_that_keeps_killing_its_job_ends_in_the_fallback_instead_of_looping(start_stack, gemini, evolution):
    stack = start_stack(job_lease_seconds=9, gemini_timeout_seconds=3, evolution_timeout_seconds=5,
                        max_typing_ms=0, gemini_max_attempts=2, fallback_message="Volto já!")
    gemini.hold()
    stack.post(text_message("oi", "LOOP1"))
    for tries in (1, 2):
        wait_until(lambda: len(gemini.requests) == tries, timeout=30, message=f"Gemini asked {tries} time(s)")
        stack.workers[-1].kill()  # killed mid-job, as an out-of-memory kill or a timeout would
        stack.add_worker()
    wait_until(lambda: sent(evolution), timeout=40, message="the fallback")
    assert sent(evolution) == ["Volto já!"] and len(gemini.requests) == 2


def test_a_redelivery_25_minutes_late_is_answered_and_hours_old_backlog_is_not(stack, gemini, evolution):
    assert stack.post(text_message("mensagem antiga", "OLD1", number="5511988881111",
                                   timestamp=time.time() - 4 * 3600))["results"] == ["ignored"]
    assert stack.post(text_message("oi, ainda aí?", "LATE1", timestamp=time.time() - 25 * 60))["results"] == ["scheduled"]
    wait_until(lambda: sent(evolution), timeout=20, message="the late message answered")
    quiet(1)
    assert [number for _, number, _ in evolution.sent_texts()] == [CUSTOMER]


def test_webhook_by_events_with_the_token_in_the_query_is_accepted(stack, gemini, evolution):
    response = requests.post(f"{stack.url}/webhook?token={TOKEN}/messages-upsert",
                             json=text_message("oi", "BYEV1"), timeout=10)
    assert response.status_code == 200 and response.json()["results"] == ["scheduled"]
    wrong = requests.post(f"{stack.url}/webhook?token=wrong-token-0000000/messages-upsert",
                          json=text_message("oi", "BYEV2"), timeout=10)
    assert wrong.status_code == 401
    wait_until(lambda: sent(evolution), timeout=20, message="the reply")


def test_a_redis_stall_in_direct_mode_gives_one_answer(stack, gemini, evolution):
    stall = threading.Thread(target=lambda: stack.redis.client().execute_command("DEBUG", "SLEEP", "5"))
    stall.start()
    time.sleep(0.3)
    body = text_message("oi, tudo bem?", "STALL1")
    first = requests.post(f"{stack.url}/webhook", params={"token": TOKEN}, json=body, timeout=20)
    stall.join()
    assert first.status_code == 503  # not answered directly: the script may still run when Redis wakes
    # Evolution delivers again; whichever of the two scripts runs first buffers it, the other is a duplicate.
    assert stack.post(body)["results"] in (["duplicate"], ["scheduled"])
    wait_until(lambda: sent(evolution), timeout=20, message="the reply")
    quiet()
    assert len(sent(evolution)) == 1 and len(gemini.requests) == 1


def test_max_wait_is_a_cap_from_the_bursts_first_message_and_later_messages_are_answered_next(start_stack, gemini,
                                                                                               evolution):
    stack = start_stack(debounce_seconds=2, max_wait_seconds=6)
    gemini.responder = lambda body: "sobre: " + body["contents"][-1]["parts"][-1]["text"].replace("\n", " + ")
    first, answered = time.monotonic(), None
    for i in range(10):  # a message every 1.5 s for 15 s: never 2 s of quiet
        stack.post(text_message(f"m{i}", f"CAP{i}"))
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            if answered is None and sent(evolution):
                answered = time.monotonic() - first
            time.sleep(0.05)
    assert answered is not None and answered < 6 + 2.5, f"first answer {answered}s after the first message"
    wait_until(lambda: "m9" in " ".join(sent(evolution)), timeout=20, message="the last message answered")
    quiet()
    said = [text.removeprefix("sobre: ").split(" + ") for text in sent(evolution)]
    assert sorted(sum(said, [])) == [f"m{i}" for i in range(10)]  # each message answered once, none merged back
    assert len(said) >= 2 and said[0][0] == "m0"


# --- issue 19: a person still wins when Redis is full or down ---------------------------------------

def test_redis_full_the_owners_answer_still_holds_the_chat(start_stack, gemini, evolution):
    stack = start_stack(time_per_char_ms=300)  # the second part is typed 3.6 s, by no worker
    redis = stack.redis.client()
    gemini.reply_with("Parte um.\n\nParte dois, sobre o preço.")
    stack.post(text_message("quanto custa?", "FULL1"))
    wait_until(lambda: sent(evolution), timeout=20, message="the first part")
    redis.config_set("maxmemory", "1")  # full: every write is refused (noeviction)
    try:
        assert stack.post(text_message("alô?", "FULL2"), expect=503)["error"]
        assert stack.post(owner("Deixa que eu te passo o preço", "3EB0FULL0000000000001"))["results"] == ["paused"]
        quiet(4)  # the second part's time passes while Redis is full
    finally:
        redis.config_set("maxmemory", "0")  # memory freed
    quiet(4)
    assert sent(evolution) == ["Parte um."] and state(stack) == "paused"
    turns = memory.load_history(redis, CID)
    assert (turns[-2]["text"], turns[-1]["text"]) == ("Parte um.", "Deixa que eu te passo o preço")


def test_redis_down_the_owners_answer_is_applied_first_when_it_is_back(start_stack, gemini, evolution):
    stack = start_stack(time_per_char_ms=300, redis_down="retry", gunicorn_workers=1)
    gemini.reply_with("Parte um.\n\nParte dois, sobre o preço.")
    stack.post(text_message("quanto custa?", "DOWNOWN1"))
    wait_until(lambda: sent(evolution), timeout=20, message="the first part")
    stack.redis.stop()
    stack.post(owner("Deixa que eu te passo o preço", "3EB0DOWN0000000000001"), expect=503)
    quiet(3)  # the second part's time passes while Redis is down
    stack.redis.start()
    quiet(8)  # Evolution delivers the owner's message again only later: the webhook applied it already
    assert sent(evolution) == ["Parte um."] and state(stack) == "paused"
    assert stack.post(owner("Deixa que eu te passo o preço", "3EB0DOWN0000000000001"))["results"] == ["duplicate"]


def test_a_part_in_flight_when_the_owner_takes_over_is_in_the_panel_and_in_history(stack, gemini, evolution):
    redis = stack.redis.client()
    gemini.reply_with("O bolo grande custa R$ 90.")
    evolution.delay_next("sendText", 2)
    stack.post(text_message("quanto custa o bolo grande?", "FLIGHT1"))
    wait_until(lambda: evolution.calls("sendText"), timeout=20, message="the reply on its way")
    assert stack.post(owner("Deixa comigo", "3EB0FLIGHT000000000001"))["results"] == ["paused"]
    wait_until(lambda: sent(evolution), timeout=10, message="the reply delivered")
    quiet(1.5)
    turns = memory.load_history(redis, CID)
    assert [(t["role"], t["text"]) for t in turns] == [
        ("user", "quanto custa o bolo grande?"), ("model", "O bolo grande custa R$ 90."), ("model", "Deixa comigo")]
    thread = [(item["from"], item["text"]) for item in chatlog.thread(redis, CID)]
    assert ("bot", "O bolo grande custa R$ 90.") in thread and ("human", "Deixa comigo") in thread
    assert stack.post(echo(evolution))["results"] == ["own"] and state(stack) == "paused"
