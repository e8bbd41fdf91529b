"""The job (worker.process_chat) in-process: fakeredis, FakeGemini through the real google-genai SDK, FakeEvolution.

Each test buffers messages with buffer.add_message (or posts them to the webhook's test client) and
then runs the chat's job itself (`run_job`), as a worker does once the dispatcher enqueued it.
DEBOUNCE_SECONDS=0, so a burst is due at once; a retry is due RETRY_BASE_SECONDS (0.1 s here) later,
and `run_job` waits for that time as the dispatcher would (the job itself never waits).
"""

import base64
import copy
import json
import logging
import threading
import time

import pytest

import ai_service
import buffer
import chats
import memory
import parser
import webhook
import worker
from conftest import CUSTOMER, INSTANCE, TOKEN, load_payload, text_message, wait_until

JID = f"{CUSTOMER}@s.whatsapp.net"
FALLBACK = "Desculpe, volto já!"


@pytest.fixture
def bot(make_settings, fake_redis, queue):
    """bot(**settings) → the job's Context on fakeredis, pointed at the fakes."""

    def make(**overrides):
        settings = make_settings(**{"DEBOUNCE_SECONDS": 0, "RETRY_BASE_SECONDS": 0.1,
                                    "FALLBACK_MESSAGE": FALLBACK, **overrides})
        return worker.make_context(settings, fake_redis, queue)

    return make


def arrive(ctx, body):
    """Buffer the one message of a webhook body, as the webhook would (not fromMe); returns its chat ref."""
    message, = parser.parse_body(body)
    assert buffer.add_message(ctx.redis, message, ctx.settings) in ("scheduled", "buffered")
    return buffer.chat_ref(message.instance, message.chat_id)


def receive(ctx, text, message_id, **kwargs):
    return arrive(ctx, text_message(text, message_id, **kwargs))


def fresh(name, instance=INSTANCE):
    """A stored real payload, moved to our instance and to now (the bot ignores old messages)."""
    body = copy.deepcopy(load_payload(name))
    body["instance"] = instance
    body["data"]["messageTimestamp"] = int(time.time())
    return body


def due(ctx, cid):
    return ctx.redis.zscore(buffer.DUE, cid)


def run_job(ctx, cid):
    """The chat's job, run when its time in `wa:due` comes (within 2 s), as the dispatcher would enqueue it."""
    at = due(ctx, cid)
    if at is not None and 0 < at - time.time() <= 2:
        time.sleep(at - time.time())
    worker.process_chat(ctx, cid)


def inflight_texts(ctx, cid):
    return [json.loads(entry)["text"] for entry in ctx.redis.lrange(buffer.keys(cid)["inflight"], 0, -1)]


def sent_bodies(evolution, route="sendText"):
    return [call["json"] for call in evolution.calls(route)]


def webhook_client(ctx):
    return webhook.create_app(ctx.settings, ctx.redis).test_client()


def post(client, body):
    response = client.post(f"/webhook?token={TOKEN}", json=body)
    assert response.status_code == 200, response.text
    return response.get_json().get("results")


def inline_media(gemini, i=-1):
    """(mime type, bytes) of the inline parts Gemini got. The SDK sends URL-safe base64, which
    FakeGemini.inline_data decodes with the standard alphabet (garbling bytes), so decode here."""
    blobs = [part.get("inlineData") or part.get("inline_data") for part in gemini.parts(i)]
    return [(blob.get("mimeType") or blob.get("mime_type"), base64.urlsafe_b64decode(blob["data"]))
            for blob in blobs if blob]


def paused(ctx, cid):
    return chats.state(ctx.redis, cid)["state"] == "paused"


def history_texts(ctx, cid):
    return [(turn["role"], turn["text"]) for turn in memory.load_history(ctx.redis, cid)]


# --- the normal path -----------------------------------------------------------------------------

def test_a_burst_gets_one_gemini_call_and_one_reply(bot, gemini, evolution):
    ctx = bot()
    gemini.reply_with("Oi! Custa R$ 25,00.")
    receive(ctx, "oi", "N1")
    cid = receive(ctx, "quanto custa o bolo?", "N2")

    run_job(ctx, cid)
    run_job(ctx, cid)  # a second job for the same chat finds nothing to do

    assert len(gemini.requests) == 1
    assert gemini.user_texts() == ["oi\nquanto custa o bolo?"]
    assert evolution.sent_texts() == [(INSTANCE, CUSTOMER, "Oi! Custa R$ 25,00.")]
    assert due(ctx, cid) is None


# --- Gemini faults -------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", [429, 500, 503, "timeout"])
def test_gemini_fault_is_retried_later_then_answered_once(bot, gemini, evolution, fault):
    ctx = bot(GEMINI_TIMEOUT_SECONDS=1)
    if fault == "timeout":
        gemini.delay_next(3)
    else:
        gemini.fail_next(fault)
    gemini.reply_with("Temos sim!")
    cid = receive(ctx, "vocês têm bolo de milho?", "GF1")

    before = time.time()
    run_job(ctx, cid)
    retry_at = due(ctx, cid)
    assert evolution.sent_texts() == []
    assert before + 0.05 < retry_at < time.time() + 1  # backoff, not the job's 90 s lease
    assert inflight_texts(ctx, cid) == ["vocês têm bolo de milho?"]

    run_job(ctx, cid)
    assert len(gemini.requests) == 2
    assert evolution.sent_texts() == [(INSTANCE, CUSTOMER, "Temos sim!")]
    assert due(ctx, cid) is None and inflight_texts(ctx, cid) == []


def test_backoff_grows_with_each_failed_try(bot, gemini):
    ctx = bot(GEMINI_MAX_ATTEMPTS=4, RETRY_BASE_SECONDS=0.2)
    gemini.fail_next(503, times=3)
    cid = receive(ctx, "oi", "GB1")
    waits = []
    for _ in range(3):
        run_job(ctx, cid)
        waits.append(due(ctx, cid) - time.time())
    # 0.2 s doubled after each failed try, ±25 % jitter
    assert 0.1 < waits[0] <= 0.25 and 0.25 < waits[1] <= 0.5 and 0.55 < waits[2] <= 1.0
    assert len(gemini.requests) == 3


def test_gemini_failing_every_try_sends_the_fallback_once_and_keeps_the_burst_in_history(bot, gemini, evolution):
    ctx = bot(GEMINI_MAX_ATTEMPTS=3)
    gemini.fail_next(503, times=3)
    cid = receive(ctx, "vocês entregam no centro?", "GX1")

    for _ in range(4):  # the last run finds the chat done
        run_job(ctx, cid)

    assert len(gemini.requests) == 3
    assert evolution.sent_texts() == [(INSTANCE, CUSTOMER, FALLBACK)]
    assert history_texts(ctx, cid) == [("user", "vocês entregam no centro?"), ("model", FALLBACK)]
    assert due(ctx, cid) is None


def test_gemini_rejecting_the_request_sends_the_fallback_at_once(bot, gemini, evolution):
    ctx = bot(GEMINI_API_KEY="not-the-right-key")  # Gemini answers 400 API_KEY_INVALID
    cid = receive(ctx, "oi", "G400")

    run_job(ctx, cid)

    assert len(gemini.requests) == 1
    assert evolution.sent_texts() == [(INSTANCE, CUSTOMER, FALLBACK)]
    assert due(ctx, cid) is None


@pytest.mark.parametrize("answer", ["blocked", "empty"])
def test_blocked_or_empty_answer_sends_the_fallback_never_an_empty_message(bot, gemini, evolution, answer):
    ctx = bot()
    if answer == "blocked":
        gemini.block_next()
    else:
        gemini.empty_next(finish_reason="SAFETY")
    cid = receive(ctx, "uma pergunta", "GBL")

    run_job(ctx, cid)
    run_job(ctx, cid)

    assert len(gemini.requests) == 1
    assert evolution.sent_texts() == [(INSTANCE, CUSTOMER, FALLBACK)]
    assert all(body["text"].strip() for body in sent_bodies(evolution))


# --- Evolution faults ----------------------------------------------------------------------------

@pytest.mark.parametrize("fault", [500, "drop", 400], ids=["500", "dropped-connection", "400-connection-closed"])
def test_failed_send_is_retried_later_without_asking_gemini_again(bot, gemini, evolution, fault):
    ctx = bot()
    gemini.reply_with("Abrimos às 9h.")
    evolution.fail_next("sendText", fault)  # 400 defaults to Evolution's "Error: Connection Closed"
    cid = receive(ctx, "que horas abre?", "EF1")

    before = time.time()
    run_job(ctx, cid)
    assert evolution.sent_texts() == []
    assert before < due(ctx, cid) < time.time() + 1
    assert json.loads(ctx.redis.get(buffer.keys(cid)["reply"]))["parts"] == ["Abrimos às 9h."]

    run_job(ctx, cid)
    assert len(gemini.requests) == 1
    assert len(evolution.calls("sendText")) == 2
    assert evolution.sent_texts() == [(INSTANCE, CUSTOMER, "Abrimos às 9h.")]
    assert due(ctx, cid) is None and not ctx.redis.exists(buffer.keys(cid)["reply"])


def test_number_not_on_whatsapp_is_dropped_not_retried_and_logged(bot, gemini, evolution, caplog):
    ctx = bot()
    evolution.not_on_whatsapp.add(CUSTOMER)
    cid = receive(ctx, "oi", "NOWA")

    with caplog.at_level(logging.INFO):
        run_job(ctx, cid)
        run_job(ctx, cid)

    assert [call["status"] for call in evolution.calls("sendText")] == [400]
    assert due(ctx, cid) is None and not ctx.redis.exists(buffer.keys(cid)["reply"])
    dropped = [r for r in caplog.records if r.levelno >= logging.ERROR and "reply dropped" in r.getMessage()]
    assert len(dropped) == 1


def test_evolution_error_logged_for_a_number_not_on_whatsapp_masks_the_number(bot, gemini, evolution, caplog):
    ctx = bot()
    evolution.not_on_whatsapp.add(CUSTOMER)
    cid = receive(ctx, "oi", "NOWA2")

    with caplog.at_level(logging.INFO):
        run_job(ctx, cid)

    assert "reply dropped" in caplog.text
    assert CUSTOMER not in caplog.text  # Evolution's 400 body carries the number, twice


def test_reply_is_dropped_once_send_retry_minutes_have_passed(bot, gemini, evolution, caplog):
    ctx = bot(SEND_RETRY_MINUTES=0.006)  # 0.36 s
    evolution.fail_next("sendText", 500, times=10)
    cid = receive(ctx, "oi", "EOLD")

    run_job(ctx, cid)
    assert due(ctx, cid) is not None  # still young: retried
    time.sleep(0.4)
    with caplog.at_level(logging.ERROR):
        run_job(ctx, cid)

    assert len(evolution.calls("sendText")) == 1 and evolution.sent_texts() == []
    assert due(ctx, cid) is None and not ctx.redis.exists(buffer.keys(cid)["reply"])
    assert "reply dropped" in caplog.text
    run_job(ctx, cid)
    assert len(evolution.calls("sendText")) == 1


# --- history -------------------------------------------------------------------------------------

def test_the_second_burst_carries_the_first_exchange_as_history(bot, gemini, evolution):
    ctx = bot()
    cid = receive(ctx, "meu nome é Ana", "H1")
    run_job(ctx, cid)
    first_answer = evolution.sent_texts()[0][2]
    receive(ctx, "qual é meu nome?", "H2")
    run_job(ctx, cid)

    contents = gemini.requests[1]["body"]["contents"]
    assert [(c["role"], c["parts"][0]["text"]) for c in contents] == [
        ("user", "meu nome é Ana"), ("model", first_answer), ("user", "qual é meu nome?")]


def test_history_is_trimmed_in_blocks_so_the_prompt_keeps_its_start(bot, gemini, evolution):
    ctx = bot(HISTORY_MAX_TURNS=2)
    cid = None
    for i in range(5):
        cid = receive(ctx, f"pergunta {i}", f"HC{i}")
        run_job(ctx, cid)

    contents = [request["body"]["contents"] for request in gemini.requests]
    # past 2 exchanges the oldest go at once, down to half: the prompt then grows again from the same start
    assert [len(c) for c in contents] == [1, 3, 5, 3, 5]
    assert contents[4][:3] == contents[3] and contents[2][:3] == contents[1]
    assert [text for role, text in history_texts(ctx, cid) if role == "user"] == ["pergunta 4"]


def test_history_is_capped_by_characters(bot, gemini, evolution):
    ctx = bot(HISTORY_MAX_CHARS=1000)
    gemini.reply_with("Claro! " + "é " * 100)
    cid = None
    sizes = []
    for i in range(8):
        cid = receive(ctx, f"pergunta {i}: " + "ção " * 40, f"HCH{i}")
        run_job(ctx, cid)
        sizes.append(sum(len(turn) for turn in ctx.redis.lrange(memory.key(cid), 0, -1)))

    assert max(sizes) <= 1000  # stored bytes: an accented letter counts two
    assert min(sizes[2:]) < 700  # trimmed to half when it passed the cap, then grew again
    assert history_texts(ctx, cid)[0][0] == "user"  # never starts with the shop's turn


def test_history_expires_after_history_ttl_days(bot, gemini, evolution):
    ctx = bot(HISTORY_TTL_DAYS=2)
    cid = receive(ctx, "oi", "HT1")
    run_job(ctx, cid)
    assert 2 * 86400 - 5 < ctx.redis.ttl(buffer.keys(cid)["history"]) <= 2 * 86400


# --- the system prompt ---------------------------------------------------------------------------

@pytest.fixture
def prompt_dir(tmp_path):
    (tmp_path / "system.md").write_text("Você é a Bia, da Doceria Exemplo.\n", encoding="utf-8")
    return tmp_path


def test_system_prompt_is_read_from_system_prompt_file(bot, gemini, prompt_dir):
    ctx = bot(SYSTEM_PROMPT_FILE=prompt_dir / "system.md")
    run_job(ctx, receive(ctx, "oi", "SP1"))
    assert gemini.system_text() == "Você é a Bia, da Doceria Exemplo."


def test_system_prompt_setting_overrides_the_file(bot, gemini, prompt_dir):
    ctx = bot(SYSTEM_PROMPT_FILE=prompt_dir / "system.md", SYSTEM_PROMPT="Você é o Caio, da Padaria Teste.")
    run_job(ctx, receive(ctx, "oi", "SP2"))
    assert gemini.system_text() == "Você é o Caio, da Padaria Teste."


def test_instance_prompt_file_overrides_for_that_instance_only(bot, gemini, prompt_dir):
    (prompt_dir / "loja2.md").write_text("Você atende a Loja 2.", encoding="utf-8")
    ctx = bot(SYSTEM_PROMPT_FILE=prompt_dir / "system.md", SYSTEM_PROMPT="Prompt geral.")
    run_job(ctx, receive(ctx, "oi", "SP3", instance="loja2"))
    run_job(ctx, receive(ctx, "oi", "SP4", instance=INSTANCE))
    assert gemini.system_text(0) == "Você atende a Loja 2."
    assert gemini.system_text(1) == "Prompt geral."


# --- what Gemini is given ------------------------------------------------------------------------

def test_max_input_chars_cuts_the_text_sent_to_gemini(bot, gemini):
    ctx = bot(MAX_INPUT_CHARS=20)
    receive(ctx, "a" * 15, "MI1")
    cid = receive(ctx, "b" * 15, "MI2")
    run_job(ctx, cid)
    assert gemini.user_texts() == ["a" * 15 + "\n" + "b" * 4]


def test_a_burst_is_ordered_by_message_timestamp_not_arrival(bot, gemini):
    ctx = bot()
    now = int(time.time())
    receive(ctx, "e entregam?", "ORD2", timestamp=now - 5)
    receive(ctx, "oi, vocês fazem bolo?", "ORD1", timestamp=now - 20)
    cid = receive(ctx, "obrigada", "ORD3", timestamp=now - 1)
    run_job(ctx, cid)
    assert gemini.user_texts() == ["oi, vocês fazem bolo?\ne entregam?\nobrigada"]


# --- human handoff, owner commands, opt-out ------------------------------------------------------

def test_customer_asking_for_an_attendant_gets_the_handoff_message_and_the_bot_pauses(bot, gemini, evolution):
    ctx = bot(HANDOFF_MESSAGE="Já chamo alguém da equipe!")
    cid = receive(ctx, "quero falar com um atendente", "HO1")

    run_job(ctx, cid)

    assert gemini.requests == []
    assert evolution.sent_texts() == [(INSTANCE, CUSTOMER, "Já chamo alguém da equipe!")]
    assert paused(ctx, cid)
    later = parser.parse_body(text_message("alô?", "HO2"))[0]
    assert buffer.add_message(ctx.redis, later, ctx.settings) == "paused"


def owner_message(text, message_id):
    """Payload 08 (the owner typing on the phone, fromMe: true), sent now."""
    body = fresh("08_v2_text_fromMe_server_ack.json", instance="Ivo Teste")
    body["data"]["key"]["id"] = message_id
    body["data"]["message"] = {"conversation": text}
    return body


OWNER_CHAT = "558599999913"  # the customer's number in payload 08


def test_owner_writing_from_the_phone_pauses_the_chat_and_drops_the_pending_burst(bot, gemini, evolution):
    ctx = bot()
    client = webhook_client(ctx)
    assert post(client, text_message("oi, tem pão?", "OW1", number=OWNER_CHAT, instance="Ivo Teste")) == ["scheduled"]
    cid = buffer.chat_ref("Ivo Teste", f"{OWNER_CHAT}@s.whatsapp.net")

    assert post(client, owner_message("Oi! Tem sim, acabou de sair.", "3EB0OWNER000000000001")) == ["paused"]
    assert post(client, text_message("que ótimo", "OW2", number=OWNER_CHAT, instance="Ivo Teste")) == ["paused"]
    run_job(ctx, cid)
    assert gemini.requests == [] and evolution.sent_texts() == []


def test_burst_the_owner_answered_stays_dropped_after_a_quick_resume(bot, gemini, evolution):
    ctx = bot()
    client = webhook_client(ctx)
    cid = buffer.chat_ref("Ivo Teste", f"{OWNER_CHAT}@s.whatsapp.net")
    post(client, text_message("oi, tem pão?", "OW3", number=OWNER_CHAT, instance="Ivo Teste"))
    post(client, owner_message("Tem sim!", "3EB0OWNER000000000003"))
    assert post(client, owner_message("#bot", "3EB0OWNER000000000004")) == ["resumed"]

    run_job(ctx, cid)  # the job of the burst the owner already answered

    assert gemini.requests == [] and evolution.sent_texts() == []


def send_message_event(text, message_id):
    """Payload 65: the `send.message` event Evolution posts for a message sent through its API."""
    body = fresh("65_v2_3_7_send_message_own_sendText.json", instance="Ivo Teste")
    body["data"]["key"].update(remoteJid=f"{OWNER_CHAT}@s.whatsapp.net", id=message_id)
    body["data"]["message"] = {"conversation": text}
    return body


@pytest.mark.parametrize("echo", [owner_message, send_message_event], ids=["fromMe-upsert", "send.message"])
def test_echo_of_our_own_send_does_not_pause_the_chat(bot, gemini, evolution, echo):
    ctx = bot()
    client = webhook_client(ctx)
    gemini.reply_with("Temos pão de queijo.")
    cid = receive(ctx, "tem pão?", "EC1", number=OWNER_CHAT, instance="Ivo Teste")
    run_job(ctx, cid)
    sent_id = evolution.sent_messages()[0]["key"]["id"]

    assert post(client, echo("Temos pão de queijo.", sent_id)) == ["own"]
    assert not paused(ctx, cid)
    assert post(client, text_message("quanto custa?", "EC2", number=OWNER_CHAT, instance="Ivo Teste")) == ["scheduled"]


def test_echo_arriving_before_the_send_returned_its_id_does_not_pause_the_chat(bot, gemini, evolution):
    ctx = bot(TIME_PER_CHAR_MS=0)
    client = webhook_client(ctx)
    gemini.reply_with("Temos pão de queijo.\n\nQuer encomendar?")
    cid = receive(ctx, "tem pão?", "EC3", number=OWNER_CHAT, instance="Ivo Teste")
    evolution.delay_next("sendText", 0.5)  # Evolution posts the echo while our sendText is still open

    job = threading.Thread(target=worker.process_chat, args=(ctx, cid))
    job.start()
    wait_until(lambda: evolution.calls("sendText"), message="the first sendText")
    outcome = post(client, owner_message("Temos pão de queijo.", "3EB0ECHOUNKNOWNID00001"))
    job.join()

    assert outcome == ["own"]
    assert [text for _, _, text in evolution.sent_texts()] == ["Temos pão de queijo.", "Quer encomendar?"]
    assert not paused(ctx, cid)


def test_resume_keyword_from_the_owner_turns_the_bot_back_on(bot, gemini, evolution):
    ctx = bot()
    client = webhook_client(ctx)
    assert post(client, owner_message("deixa que eu respondo", "3EB0OWNER000000000010")) == ["paused"]
    assert post(client, owner_message("#bot", "3EB0OWNER000000000011")) == ["resumed"]
    assert post(client, text_message("e agora?", "RS1", number=OWNER_CHAT, instance="Ivo Teste")) == ["scheduled"]
    run_job(ctx, buffer.chat_ref("Ivo Teste", f"{OWNER_CHAT}@s.whatsapp.net"))
    assert len(evolution.sent_texts()) == 1


def test_stop_keyword_from_the_owner_stops_the_bot_for_good(bot, fake_redis):
    ctx = bot(HANDOFF_PAUSE_MINUTES=1)
    client = webhook_client(ctx)
    cid = buffer.chat_ref("Ivo Teste", f"{OWNER_CHAT}@s.whatsapp.net")
    assert post(client, owner_message("#parar", "3EB0OWNER000000000020")) == ["stopped"]
    assert post(client, owner_message("qualquer coisa", "3EB0OWNER000000000021")) == ["stopped"]
    assert fake_redis.ttl(buffer.keys(cid)["paused"]) == -1  # no expiry, unlike a handoff pause
    assert post(client, text_message("oi?", "ST1", number=OWNER_CHAT, instance="Ivo Teste")) == ["paused"]


def test_redelivered_owner_command_is_applied_once(bot):
    """Evolution delivers a fromMe upsert again and again (payload 18, issue #631); an old '#bot'
    coming back after the owner took the chat over again must not turn the bot back on."""
    ctx = bot()
    client = webhook_client(ctx)
    resume = owner_message("#bot", "3EB0OWNER000000000030")
    assert post(client, owner_message("eu assumo", "3EB0OWNER000000000031")) == ["paused"]
    assert post(client, resume) == ["resumed"]
    assert post(client, owner_message("na verdade eu continuo", "3EB0OWNER000000000032")) == ["paused"]

    post(client, resume)  # the same message again

    cid = buffer.chat_ref("Ivo Teste", f"{OWNER_CHAT}@s.whatsapp.net")
    assert paused(ctx, cid)


def test_optout_word_gets_the_optout_message_once_and_later_messages_are_ignored(bot, gemini, evolution):
    ctx = bot(OPTOUT_MESSAGE="Ok, não envio mais mensagens.")
    cid = receive(ctx, "sair", "OPT1")
    run_job(ctx, cid)

    later = parser.parse_body(text_message("sair", "OPT2"))[0]
    assert buffer.add_message(ctx.redis, later, ctx.settings) == "opted_out"
    run_job(ctx, cid)

    assert gemini.requests == []
    assert evolution.sent_texts() == [(INSTANCE, CUSTOMER, "Ok, não envio mais mensagens.")]


def test_failed_tries_of_a_dropped_burst_do_not_count_against_the_next_burst(bot, gemini, evolution):
    ctx = bot(GEMINI_MAX_ATTEMPTS=2)
    client = webhook_client(ctx)
    cid = buffer.chat_ref("Ivo Teste", f"{OWNER_CHAT}@s.whatsapp.net")
    gemini.fail_next(503)
    post(client, text_message("oi", "AT1", number=OWNER_CHAT, instance="Ivo Teste"))
    run_job(ctx, cid)  # try 1 of 2 failed; retry scheduled
    post(client, owner_message("pode deixar que eu respondo", "3EB0OWNER000000000040"))  # burst dropped
    post(client, owner_message("#bot", "3EB0OWNER000000000041"))

    gemini.fail_next(503)
    gemini.reply_with("Pode perguntar!")
    post(client, text_message("outra pergunta", "AT2", number=OWNER_CHAT, instance="Ivo Teste"))
    run_job(ctx, cid)  # a new burst's first try: must be retried, not answered with the fallback
    run_job(ctx, cid)

    assert evolution.sent_texts() == [("Ivo Teste", OWNER_CHAT, "Pode perguntar!")]


# --- feels like a person -------------------------------------------------------------------------

def test_long_answer_goes_out_part_by_part_each_typed_first_by_a_later_job(bot, gemini, evolution):
    ctx = bot(TIME_PER_CHAR_MS=10, MAX_TYPING_MS=200)
    gemini.reply_with("Oi! Tudo bem?\n\nO bolo de cenoura custa R$ 30.\n\n\n  Quer encomendar?  ")
    cid = receive(ctx, "quanto é o bolo?", "SPL1")

    run_job(ctx, cid)  # Gemini answers; "digitando…" for part 1 and the job ends: part 1 is due 130 ms later
    wait_until(lambda: evolution.calls("sendPresence"), message="part 1 typed")
    assert evolution.sent_texts() == [] and due(ctx, cid) > time.time()
    for part in range(1, 4):
        run_job(ctx, cid)  # sends part `part`, announces the next one and leaves it to the next job
        assert len(evolution.sent_texts()) == part
        wait_until(lambda: len(evolution.calls("sendPresence")) == min(part + 1, 3), message="the next part typed")

    assert due(ctx, cid) is None and len(gemini.requests) == 1
    assert [body["delay"] for body in sent_bodies(evolution, "sendPresence")] == [130, 200, 160]  # 300 capped
    assert [(body["text"], body.get("delay"), body["linkPreview"]) for body in sent_bodies(evolution)] == [
        ("Oi! Tudo bem?", None, False),  # typed first ("digitando…"), then sent by a job that checks the chat again
        ("O bolo de cenoura custa R$ 30.", None, False),
        ("Quer encomendar?", None, False),
    ]
    routes = [call["route"] for call in evolution.requests if call["route"] in ("sendPresence", "sendText")]
    assert routes == ["sendPresence", "sendText"] * 3
    assert history_texts(ctx, cid)[-1] == (
        "model", "Oi! Tudo bem?\n\nO bolo de cenoura custa R$ 30.\n\nQuer encomendar?")


def test_split_messages_off_sends_one_message(bot, gemini, evolution):
    ctx = bot(SPLIT_MESSAGES="false")
    gemini.reply_with("Oi! Tudo bem?\n\nO bolo custa R$ 30.")
    run_job(ctx, receive(ctx, "quanto é o bolo?", "SPL2"))
    assert [text for _, _, text in evolution.sent_texts()] == ["Oi! Tudo bem?\n\nO bolo custa R$ 30."]


def test_typing_presence_and_read_receipts_for_the_burst(bot, gemini, evolution):
    ctx = bot(SEND_PRESENCE="true", MARK_READ="true")
    receive(ctx, "oi", "RD1")
    cid = receive(ctx, "tudo bem?", "RD2")
    run_job(ctx, cid)

    wait_until(lambda: evolution.calls("sendPresence"), message="the presence call")
    presence, = sent_bodies(evolution, "sendPresence")
    assert presence["number"] == CUSTOMER and presence["presence"] == "composing"
    read, = sent_bodies(evolution, "markMessageAsRead")
    assert read["readMessages"] == [{"remoteJid": JID, "fromMe": False, "id": "RD1"},
                                    {"remoteJid": JID, "fromMe": False, "id": "RD2"}]


def test_typing_presence_and_read_receipts_can_be_switched_off(bot, gemini, evolution):
    ctx = bot(SEND_PRESENCE="false", MARK_READ="false")
    run_job(ctx, receive(ctx, "oi", "RD3"))
    time.sleep(0.2)  # the presence call would run in a thread
    assert len(evolution.sent_texts()) == 1
    assert evolution.calls("sendPresence") == [] and evolution.calls("markMessageAsRead") == []


@pytest.mark.parametrize("payload", ["50_v2_2_stickerMessage.json", "51_v2_2_locationMessage.json"])
def test_sticker_or_location_only_burst_gets_unknown_message(bot, gemini, evolution, payload):
    ctx = bot(UNKNOWN_MESSAGE="Por enquanto só entendo texto, fotos e áudios.")
    cid = arrive(ctx, fresh(payload))
    run_job(ctx, cid)
    assert gemini.requests == []
    assert [text for _, _, text in evolution.sent_texts()] == ["Por enquanto só entendo texto, fotos e áudios."]


def test_sticker_only_burst_gets_nothing_without_unknown_message(bot, gemini, evolution):
    ctx = bot(UNKNOWN_MESSAGE="")
    cid = arrive(ctx, fresh("50_v2_2_stickerMessage.json"))
    run_job(ctx, cid)
    assert gemini.requests == [] and evolution.calls("sendText") == []
    assert due(ctx, cid) is None


# --- media ---------------------------------------------------------------------------------------

VOICE = b"OggS\x00\x02" + bytes(range(256)) * 4  # stands for an opus voice note
PHOTO = b"\xff\xd8\xff\xe0" + b"JFIF-foto-do-bolo" * 40


def voice_note():
    body = fresh("68_v2_3_7_audio_ptt_no_base64_long_bytes_objects.json")
    assert "base64" not in body["data"]["message"]
    return body


def test_voice_note_without_base64_is_downloaded_and_given_to_gemini(bot, gemini, evolution):
    ctx = bot()
    body = voice_note()
    evolution.add_media(body["data"]["key"]["id"], "audio/ogg; codecs=opus", VOICE)
    cid = arrive(ctx, body)

    run_job(ctx, cid)

    download, = sent_bodies(evolution, "getBase64FromMediaMessage")
    assert download["message"]["key"]["id"] == body["data"]["key"]["id"]
    assert inline_media(gemini) == [("audio/ogg", VOICE)]
    assert len(evolution.sent_texts()) == 1


def test_inline_base64_is_never_kept_in_the_burst_only_aside_until_answered(bot, gemini, evolution):
    ctx = bot()
    body = fresh("10_v2_audio_ptt_webhook_base64_placeholder.json")  # Evolution's "webhook base64" on
    body["data"]["key"]["remoteJid"] = JID
    body["data"]["message"]["base64"] = base64.b64encode(VOICE).decode()
    cid = arrive(ctx, body)
    assert all(b"base64" not in entry for entry in ctx.redis.lrange(buffer.keys(cid)["burst"], 0, -1))
    assert 0 < ctx.redis.ttl(buffer.keys(cid)["media"]) <= 1 + 300 + buffer.MEDIA_CACHE_SECONDS

    run_job(ctx, cid)

    assert evolution.calls("getBase64FromMediaMessage") == []  # the webhook's copy was used
    assert inline_media(gemini) == [("audio/ogg", VOICE)]
    assert not ctx.redis.exists(buffer.keys(cid)["media"])  # gone once answered


def test_inline_base64_over_max_media_mb_is_not_kept(bot, gemini, evolution):
    ctx = bot(MAX_MEDIA_MB=0.0001)  # 104 bytes
    body = fresh("10_v2_audio_ptt_webhook_base64_placeholder.json")
    body["data"]["key"]["remoteJid"] = JID
    body["data"]["message"]["base64"] = base64.b64encode(VOICE).decode()
    cid = arrive(ctx, body)
    assert not ctx.redis.exists(buffer.keys(cid)["media"])


def test_image_with_caption_gives_gemini_the_image_and_the_caption(bot, gemini, evolution):
    ctx = bot()
    body = fresh("33_v2_2_imageMessage_caption.json")
    evolution.add_media(body["data"]["key"]["id"], "image/jpeg", PHOTO, "imageMessage")
    cid = arrive(ctx, body)

    run_job(ctx, cid)

    assert inline_media(gemini) == [("image/jpeg", PHOTO)]
    assert gemini.user_texts() == ["Esse é o modelo que eu quero\n" + ai_service.MEDIA_NOTE_REQUEST]


def test_media_over_max_media_mb_alone_is_not_downloaded_and_gets_the_too_large_message(bot, gemini, evolution):
    ctx = bot(MAX_MEDIA_MB=0.005, MEDIA_TOO_LARGE_MESSAGE="Arquivo grande demais, pode escrever?")
    body = voice_note()  # fileLength 10460 > 5 KB
    evolution.add_media(body["data"]["key"]["id"], "audio/ogg; codecs=opus", VOICE)
    cid = arrive(ctx, body)

    run_job(ctx, cid)

    assert evolution.calls("getBase64FromMediaMessage") == []
    assert gemini.requests == []
    assert [text for _, _, text in evolution.sent_texts()] == ["Arquivo grande demais, pode escrever?"]


def test_voice_note_longer_than_max_media_seconds_is_not_downloaded(bot, gemini, evolution):
    ctx = bot(MAX_MEDIA_SECONDS=3)
    body = voice_note()  # seconds: 4
    evolution.add_media(body["data"]["key"]["id"], "audio/ogg; codecs=opus", VOICE)
    cid = arrive(ctx, body)

    run_job(ctx, cid)

    assert evolution.calls("getBase64FromMediaMessage") == []
    assert gemini.requests == []
    assert len(evolution.sent_texts()) == 1


def test_media_over_max_media_mb_with_a_caption_is_not_downloaded_and_gemini_is_told(bot, gemini, evolution):
    ctx = bot(MAX_MEDIA_MB=0.1)
    body = fresh("33_v2_2_imageMessage_caption.json")  # fileLength 184320 > 100 KB
    evolution.add_media(body["data"]["key"]["id"], "image/jpeg", PHOTO, "imageMessage")
    cid = arrive(ctx, body)

    run_job(ctx, cid)

    assert evolution.calls("getBase64FromMediaMessage") == []
    assert inline_media(gemini) == []
    text, = gemini.user_texts()
    caption, note = text.split("\n")
    assert caption == "Esse é o modelo que eu quero"
    assert "grande demais" in note
    assert len(evolution.sent_texts()) == 1


def test_failing_media_download_is_retried(bot, gemini, evolution):
    ctx = bot()
    body = voice_note()
    evolution.add_media(body["data"]["key"]["id"], "audio/ogg; codecs=opus", VOICE)
    evolution.fail_next("getBase64FromMediaMessage", 400, message=["Message not found"])
    cid = arrive(ctx, body)

    run_job(ctx, cid)
    assert gemini.requests == [] and due(ctx, cid) is not None
    run_job(ctx, cid)

    assert len(evolution.calls("getBase64FromMediaMessage")) == 2
    assert inline_media(gemini) == [("audio/ogg", VOICE)]
    assert len(evolution.sent_texts()) == 1


def test_media_that_cannot_be_downloaded_gets_the_media_failed_message(bot, gemini, evolution):
    ctx = bot(GEMINI_MAX_ATTEMPTS=2, MEDIA_FAILED_MESSAGE="Não abriu aqui, pode escrever?")
    cid = arrive(ctx, voice_note())  # Evolution has no such media: 400 every time

    for _ in range(3):
        run_job(ctx, cid)

    assert len(evolution.calls("getBase64FromMediaMessage")) == 2
    assert gemini.requests == []
    assert [text for _, _, text in evolution.sent_texts()] == ["Não abriu aqui, pode escrever?"]


def test_media_bytes_never_appear_in_logs(bot, gemini, evolution, caplog):
    ctx = bot()
    body = voice_note()
    evolution.add_media(body["data"]["key"]["id"], "audio/ogg; codecs=opus", VOICE)
    evolution.fail_next("getBase64FromMediaMessage", 500)
    gemini.fail_next(503)
    cid = arrive(ctx, body)

    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            run_job(ctx, cid)

    assert inline_media(gemini) == [("audio/ogg", VOICE)]
    assert "replied in 1 message" in caplog.text
    encoded = base64.b64encode(VOICE).decode()
    for chunk in (encoded[:24], encoded[len(encoded) // 2:][:24], repr(VOICE)[2:26]):
        assert chunk not in caplog.text


# --- crash safety --------------------------------------------------------------------------------

def snapshot(redis, cid):
    """Every key of the chat (with its TTL) and its wa:due score, at this instant."""
    saved = {key: (redis.dump(key), max(redis.pttl(key), 0)) for key in buffer.keys(cid).values() if redis.exists(key)}
    return saved, redis.zscore(buffer.DUE, cid)


def restore(redis, cid, state):
    saved, score = state
    redis.delete(*buffer.keys(cid).values())
    for key, (dumped, ttl) in saved.items():
        redis.restore(key, ttl, dumped)
    redis.zadd(buffer.DUE, {cid: score})


@pytest.mark.parametrize("attempted", [False, True], ids=["before-part-2", "during-part-2"])
def test_after_a_crash_between_two_parts_the_next_job_sends_only_the_rest(bot, gemini, evolution, fake_redis, attempted):
    ctx = bot(TIME_PER_CHAR_MS=0)
    gemini.reply_with("Temos bolo de milho.\n\nQuer que eu separe um?")
    cid = receive(ctx, "tem bolo?", "CR1")
    evolution.delay_next("sendText", 0)
    evolution.delay_next("sendText", 0.5)  # part 2 is on its way when the worker "dies"

    job = threading.Thread(target=worker.process_chat, args=(ctx, cid))
    job.start()
    wait_until(lambda: len(evolution.calls("sendText")) == 2, message="part 2's sendText")
    at_crash = snapshot(fake_redis, cid)
    job.join()
    assert at_crash[0][buffer.keys(cid)["lock"]], "the job held the chat when it died"

    restore(fake_redis, cid, at_crash)  # the worker died right there, with part 2 on its way
    stored = json.loads(fake_redis.get(buffer.keys(cid)["reply"]))
    assert stored["attempt"] == 1, "part 2's send was recorded as attempted before it was made"
    if not attempted:  # died a moment earlier: after part 1, before part 2 was attempted
        del stored["attempt"]
        fake_redis.set(buffer.keys(cid)["reply"], json.dumps(stored))
    fake_redis.delete(f"wa:lock:{cid}")  # its lock expired...
    fake_redis.zadd(buffer.DUE, {cid: time.time()})  # ...and so did its lease
    sent_before = len(evolution.sent_texts())
    run_job(ctx, cid)

    # An attempted part may have reached the customer: it is counted as sent, never sent twice.
    resent = [] if attempted else [(INSTANCE, CUSTOMER, "Quer que eu separe um?")]
    assert evolution.sent_texts()[sent_before:] == resent
    assert len(gemini.requests) == 1
    assert due(ctx, cid) is None


# --- several instances ---------------------------------------------------------------------------

def test_the_same_number_on_two_instances_is_two_chats(bot, gemini, evolution):
    ctx = bot()
    gemini.responder = lambda body: "resposta para: " + body["contents"][-1]["parts"][-1]["text"]
    shop = receive(ctx, "pedido da loja 1", "INS1", instance=INSTANCE)
    loja2 = receive(ctx, "pedido da loja 2", "INS1", instance="loja2")  # same id, other instance
    assert shop != loja2

    run_job(ctx, shop)
    run_job(ctx, loja2)

    assert evolution.sent_texts() == [(INSTANCE, CUSTOMER, "resposta para: pedido da loja 1"),
                                      ("loja2", CUSTOMER, "resposta para: pedido da loja 2")]
    assert [r["instance"] for r in evolution.calls("sendText")] == [INSTANCE, "loja2"]
    assert history_texts(ctx, shop)[0] == ("user", "pedido da loja 1")
    assert history_texts(ctx, loja2)[0] == ("user", "pedido da loja 2")


def test_reply_goes_through_the_instance_the_message_came_on(bot, gemini, evolution):
    ctx = bot(EVOLUTION_INSTANCE=INSTANCE)
    cid = receive(ctx, "oi", "IVO1", instance="Ivo Teste")
    run_job(ctx, cid)
    call, = evolution.calls("sendText")
    assert call["path"] == "/message/sendText/Ivo%20Teste"
    assert evolution.sent_texts()[0][:2] == ("Ivo Teste", CUSTOMER)


# --- issue 9/12: media budget, one download, null answers, '@lid' read receipts, erasure -----------------

def photo(message_id, instance=INSTANCE):
    body = fresh("33_v2_2_imageMessage_caption.json", instance=instance)
    body["data"]["key"].update(id=message_id, remoteJid=JID)
    return body


def test_media_downloaded_once_is_not_downloaded_again_when_gemini_is_retried(bot, gemini, evolution):
    ctx = bot()
    body = voice_note()
    evolution.add_media(body["data"]["key"]["id"], "audio/ogg; codecs=opus", VOICE)
    gemini.fail_next(503)
    cid = arrive(ctx, body)

    run_job(ctx, cid)  # downloaded, Gemini failed: a retry is scheduled
    run_job(ctx, cid)

    assert len(evolution.calls("getBase64FromMediaMessage")) == 1
    assert len(gemini.requests) == 2 and len(evolution.sent_texts()) == 1
    assert not ctx.redis.exists(buffer.keys(cid)["media"])  # the copy is gone once the burst is answered


def test_media_answer_null_is_a_failed_download_retried_then_the_media_failed_message(bot, gemini, evolution):
    ctx = bot(GEMINI_MAX_ATTEMPTS=2, MEDIA_FAILED_MESSAGE="Não abriu, pode escrever?")
    body = voice_note()
    evolution.null_next("getBase64FromMediaMessage", times=2)
    cid = arrive(ctx, body)

    run_job(ctx, cid)
    run_job(ctx, cid)

    assert len(evolution.calls("getBase64FromMediaMessage")) == 2 and gemini.requests == []
    assert [text for _, _, text in evolution.sent_texts()] == ["Não abriu, pode escrever?"]


def test_a_burst_gets_at_most_max_burst_media_files(bot, gemini, evolution):
    ctx = bot(MAX_BURST_MEDIA=2)
    for i in range(4):
        evolution.add_media(f"FOTO{i}", "image/jpeg", PHOTO + bytes([i]), "imageMessage")
        cid = arrive(ctx, photo(f"FOTO{i}"))

    run_job(ctx, cid)

    assert len(evolution.calls("getBase64FromMediaMessage")) == 2
    assert len(inline_media(gemini)) == 2
    assert any("mais arquivos do que consigo abrir" in text for text in gemini.user_texts())


def test_a_download_stops_at_max_media_mb_whatever_the_sender_declared(bot, gemini, evolution):
    ctx = bot(MAX_MEDIA_MB=0.01, MEDIA_TOO_LARGE_MESSAGE="Grande demais!")
    body = voice_note()
    body["data"]["message"]["audioMessage"]["fileLength"] = 100  # a lie: the real file is 64 KB
    evolution.add_media(body["data"]["key"]["id"], "audio/ogg", b"\x00" * 65536)
    cid = arrive(ctx, body)

    run_job(ctx, cid)

    assert gemini.requests == []
    assert [text for _, _, text in evolution.sent_texts()] == ["Grande demais!"]


def test_read_receipts_go_with_the_phone_jid_of_a_lid_chat(bot, gemini, evolution):
    ctx = bot()
    body = fresh("04_v2_3_5plus_lid_with_remoteJidAlt_long_buffer_quirk.json")
    cid = arrive(ctx, body)
    run_job(ctx, cid)
    phone = body["data"]["key"]["remoteJidAlt"]
    assert [key["remoteJid"] for key in evolution.read_keys] == [phone]


def test_a_reply_of_many_paragraphs_is_capped_at_max_reply_parts(bot, gemini, evolution):
    ctx = bot(MAX_REPLY_PARTS=2)
    gemini.reply_with("um\n\ndois\n\ntrês")
    run_job(ctx, receive(ctx, "conta", "MANY1"))
    assert [text for _, _, text in evolution.sent_texts()] == ["um", "dois\n\ntrês"]


@pytest.mark.parametrize("written", ["+55 85 9 9999-9913", "558599999913", "5585999999913", "55 (85) 99999-9913"])
def test_forget_finds_the_customer_however_the_number_is_written(bot, gemini, evolution, written):
    ctx = bot()
    cid = receive(ctx, "oi", "FGT1", number=OWNER_CHAT, instance="Ivo Teste")  # kept without the ninth digit
    run_job(ctx, cid)
    assert memory.load_history(ctx.redis, cid)

    assert chats.forget_customer(ctx.redis, "Ivo Teste", written) > 0
    assert [key for key in ctx.redis.keys() if cid.encode() in key] == []


def test_a_job_whose_chat_a_person_took_stores_nothing_and_sends_nothing(bot, gemini, evolution):
    ctx = bot()
    cid = receive(ctx, "oi", "TAKE1")
    state, token, _, entries, tries = buffer.claim(ctx.redis, cid, ctx.settings.job_lease_seconds)
    chats.take_over(ctx.redis, cid, ctx.settings)  # the panel's button, while Gemini answers

    assert worker.compose_reply(ctx, cid, token, entries, tries) is None
    assert not ctx.redis.exists(buffer.keys(cid)["reply"])
    assert evolution.sent_texts() == [] and chats.state(ctx.redis, cid)["state"] == "paused"


def test_forget_on_every_instance_the_bot_knows(bot, gemini, evolution, redis_server, monkeypatch, capsys):
    """`worker.py forget '*' NUMBER` on a real Redis: both instances' chats erased, another customer kept."""
    import instances

    redis = redis_server.client()
    ctx = worker.make_context(bot().settings, redis, queue=__import__("rq").Queue("whatsapp", connection=redis))
    for instance in ("shop", "loja2"):
        instances.record_state(redis, instance, "open", None, time.time())
        run_job(ctx, receive(ctx, "oi", f"ALL-{instance}", instance=instance))
    other = receive(ctx, "oi", "ALL-OTHER", number="5521977772222")
    monkeypatch.setenv("REDIS_URL", redis_server.url)

    assert worker.main(["forget", "*", "+55 11 99999-4321"]) == 0

    assert "erased" in capsys.readouterr().out
    for instance in ("shop", "loja2"):
        assert not memory.load_history(redis, buffer.chat_ref(instance, JID))
    assert redis.exists(buffer.keys(other)["burst"])
