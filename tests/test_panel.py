"""The panel (/panel) and its JSON API on fakeredis with Flask's test client; the conversation log and counters.

Evolution and Gemini are the fakes from tests/fakes.py; the webhook's own test client delivers messages.
"""

import json
import re
import time

import pytest

import buffer
import chat_ids
import chats
import memory
import parser
import stats
import webhook
import worker
from conftest import CUSTOMER, INSTANCE, PANEL_KEY, TOKEN, text_message

PASSWORD = "senha-do-painel-teste"
CID = buffer.chat_ref(INSTANCE, f"{CUSTOMER}@s.whatsapp.net")
PID = chat_ids.public(PANEL_KEY.encode(), CID)  # the chat's id in the panel's URLs


@pytest.fixture
def settings(make_settings, prompts):
    return make_settings(PANEL_PASSWORD=PASSWORD, SYSTEM_PROMPT_FILE=prompts / "system.md", DEBOUNCE_SECONDS=0,
                         HANDOFF_PAUSE_MINUTES=30)


@pytest.fixture
def app(settings, fake_redis):
    return webhook.create_app(settings, fake_redis)


@pytest.fixture
def client(app):
    return app.test_client()


def csrf_from_login_page(client):
    page = client.get("/panel/login")
    assert page.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)


def login(client, password=PASSWORD, **kwargs):
    token = csrf_from_login_page(client)
    return client.post("/panel/login", data={"password": password, "csrf_token": token}, **kwargs)


@pytest.fixture
def owner(client):
    """A logged-in test client; `owner.csrf` is the token for the X-CSRF-Token header."""
    assert login(client).status_code == 302
    client.csrf = client.get("/panel/api/session").get_json()["csrf_token"]
    return client


def post(client, url, body=None, csrf=True):
    headers = {"X-CSRF-Token": client.csrf} if csrf else {}
    return client.post(url, json=body, headers=headers)


def deliver(client, text, message_id, **kwargs):
    response = client.post(f"/webhook?token={TOKEN}", json=text_message(text, message_id, **kwargs))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["results"][0]


# --- no panel, login, sessions ----------------------------------------------------------------

def test_no_panel_while_the_password_is_empty(make_settings, fake_redis):
    client = webhook.create_app(make_settings(PANEL_PASSWORD=""), fake_redis).test_client()
    for url in ("/panel", "/panel/", "/panel/login", "/panel/api/chats", "/panel/api/session"):
        assert client.get(url).status_code == 404, url
    assert client.post("/panel/login", data={"password": ""}).status_code == 404


def test_unauthenticated_api_gets_401_and_pages_redirect_to_the_login(client):
    for url in ("/panel/api/chats", f"/panel/api/chats/{PID}", "/panel/api/session", "/panel/api/stats",
                "/panel/api/prompts/system"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.get_json() == {"error": "not logged in"}
    for url in (f"/panel/api/chats/{PID}/pause", f"/panel/api/chats/{PID}/reply", "/panel/api/try"):
        assert client.post(url, json={"text": "x"}).status_code == 401, url
    assert client.put("/panel/api/prompts/system", json={"text": "x"}).status_code == 401
    for url in ("/panel/", "/panel/persona", "/panel/health", f"/panel/chats/{PID}"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/panel/login")


def test_login_needs_the_form_csrf_token_and_the_password(client):
    assert client.post("/panel/login", data={"password": PASSWORD}).status_code == 403
    csrf_from_login_page(client)
    assert client.post("/panel/login", data={"password": PASSWORD, "csrf_token": "forged"}).status_code == 403
    wrong = login(client, password="errada")
    assert wrong.status_code == 401
    assert "Senha incorreta" in wrong.get_data(as_text=True)
    assert client.get("/panel/api/chats").status_code == 401

    right = login(client)
    assert right.status_code == 302 and right.headers["Location"] == "/panel/"
    assert client.get("/panel/api/chats").status_code == 200


def test_session_cookie_is_httponly_strict_and_secure_over_https(client):
    cookies = login(client).headers.getlist("Set-Cookie")
    cookie = next(c for c in cookies if c.startswith("panel_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/panel" in cookie
    assert "Secure" not in cookie

    client.post("/panel/logout", data={"csrf_token": client.get("/panel/api/session").get_json()["csrf_token"]})
    cookies = login(client, headers={"X-Forwarded-Proto": "https"}).headers.getlist("Set-Cookie")
    assert all("; Secure" in c for c in cookies if c.startswith(("panel_session=", "panel_device=")))


def test_the_session_is_in_redis_and_the_cookie_only_names_it(client, fake_redis):
    login(client)
    sid = client.get_cookie("panel_session", path="/panel").value
    key, = fake_redis.smembers("wa:panel:sessions")
    assert sid.encode() not in key and sid.encode() not in b"".join(fake_redis.hvals(key))
    assert 12 * 3600 - 5 < fake_redis.ttl(key) <= 12 * 3600
    assert sid not in str(fake_redis.keys())


def test_wrong_passwords_are_slowed_down_per_address(app, client, fake_redis):
    for _ in range(5):
        assert login(client, password="errada").status_code == 401
    locked = login(client)  # right password, but within the wait (1 s after the 5th wrong one)
    assert locked.status_code == 429
    assert "Tente de novo em" in locked.get_data(as_text=True)
    assert client.get("/panel/api/chats").status_code == 401

    other_ip = app.test_client()
    assert login(other_ip, environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 302

    key = "wa:panel:fails:127.0.0.1"
    fails = int(fake_redis.hget(key, "n"))
    fake_redis.hset(key, "last", repr(time.time() - 2 ** (fails - 5) - 1))  # the wait has passed
    assert login(client).status_code == 302
    assert not fake_redis.exists(key)


def test_waits_grow_with_each_wrong_password(client, fake_redis):
    key = "wa:panel:fails:127.0.0.1"
    fake_redis.hset(key, mapping={"n": 9, "last": repr(time.time())})
    text = login(client).get_data(as_text=True)
    wait = int(re.search(r"em (\d+) s", text).group(1))
    assert 15 <= wait <= 16  # 2 ** (9 - 5)


def test_logout_needs_csrf_and_ends_the_session(owner):
    assert owner.post("/panel/logout").status_code == 403
    assert owner.post("/panel/logout", data={"csrf_token": owner.csrf}).status_code == 302
    assert owner.get("/panel/api/chats").status_code == 401


def test_state_changing_api_calls_need_the_csrf_header(owner, fake_redis):
    deliver(owner, "oi", "CSRF1")
    for url in (f"/panel/api/chats/{PID}/pause", f"/panel/api/chats/{PID}/stop", f"/panel/api/chats/{PID}/forget"):
        assert post(owner, url, csrf=False).status_code == 403, url
        assert owner.post(url, headers={"X-CSRF-Token": "forged"}).status_code == 403
    # a form field is no substitute for the header on the API
    assert owner.post(f"/panel/api/chats/{PID}/pause", data={"csrf_token": owner.csrf}).status_code == 403
    assert owner.put("/panel/api/prompts/system", json={"text": "x"}).status_code == 403
    assert chats.state(fake_redis, CID)["state"] != "paused"
    assert fake_redis.exists(memory.key(CID))


# --- inbox and conversation ------------------------------------------------------------------------

def test_a_customer_message_shows_in_the_inbox_masked_with_its_state(owner, settings):
    assert deliver(owner, "Oi, tem bolo de cenoura?", "IN1") == "scheduled"
    listed = owner.get("/panel/api/chats").get_json()
    assert listed["total"] == 1 and listed["next"] is None and listed["needs_person"] == 0
    chat, = listed["chats"]
    assert chat["id"] == PID
    assert chat["instance"] == INSTANCE and chat["name"] == "Cliente"
    assert chat["number_masked"] == parser.mask(CUSTOMER) != CUSTOMER
    assert chat["state"] == chat["bot_state"] == "waiting" and chat["needs_person_since"] is None
    assert chat["last_text"] == "Oi, tem bolo de cenoura?"
    assert "number" not in chat and CUSTOMER not in json.dumps(listed)

    page = owner.get("/panel/").get_data(as_text=True)
    assert "Oi, tem bolo de cenoura?" in page and parser.mask(CUSTOMER) in page and CUSTOMER not in page
    assert 'data-state="waiting"' in owner.get("/panel/part/inbox").get_data(as_text=True)


def test_the_conversation_has_every_message_in_order_and_reveals_the_number(owner, fake_redis, settings, gemini,
                                                                           evolution):
    gemini.reply_with("Temos sim!\n\nR$ 30 o bolo.")
    now = int(time.time())
    deliver(owner, "Oi", "TH1", timestamp=now - 2)
    deliver(owner, "tem bolo?", "TH2", timestamp=now - 1)
    deliver(owner, "tem bolo?", "TH2", timestamp=now - 1)  # Evolution delivers again: stored once
    ctx = worker.make_context(settings, fake_redis)
    worker.process_chat(ctx, CID)
    assert [text for _, _, text in evolution.sent_texts()] == ["Temos sim!", "R$ 30 o bolo."]

    chat = owner.get(f"/panel/api/chats/{PID}").get_json()
    assert [(m["from"], m["text"]) for m in chat["messages"]] == [
        ("customer", "Oi"), ("customer", "tem bolo?"), ("bot", "Temos sim!"), ("bot", "R$ 30 o bolo.")]
    assert [m["id"] for m in chat["messages"][2:]] == [s["key"]["id"] for s in evolution.sent_messages()]
    assert chat["state"] == "idle" and "number" not in chat
    assert owner.get(f"/panel/api/chats/{PID}?reveal=1").get_json()["number"] == CUSTOMER
    page = owner.get(f"/panel/chats/{PID}").get_data(as_text=True)
    assert "R$ 30 o bolo." in page and "from-bot" in page and CUSTOMER not in page
    assert owner.get("/panel/api/chats/0123456789abcdef0123").status_code == 404
    assert owner.get("/panel/api/chats/nothex").status_code == 404


def test_media_is_shown_as_what_it_is(owner):
    body = text_message("", "IMG1")
    body["data"]["message"] = {"imageMessage": {"caption": "olha essa foto", "mimetype": "image/jpeg"}}
    body["data"]["messageType"] = "imageMessage"
    owner.post(f"/webhook?token={TOKEN}", json=body)
    message, = owner.get(f"/panel/api/chats/{PID}").get_json()["messages"]
    assert message["kind"] == "image" and message["text"] == "olha essa foto"
    part = owner.get(f"/panel/part/chats/{PID}").get_data(as_text=True)
    assert f'<img class="thumb" src="/panel/media/{PID}/IMG1"' in part and "olha essa foto" in part
    location = text_message("", "LOC1")
    location["data"]["message"] = {"locationMessage": {"degreesLatitude": -3.7, "degreesLongitude": -38.5}}
    location["data"]["messageType"] = "locationMessage"
    owner.post(f"/webhook?token={TOKEN}", json=location)
    assert "[localização]" in owner.get(f"/panel/part/chats/{PID}").get_data(as_text=True)  # no media to fetch


def test_take_over_hand_back_and_stop(owner, fake_redis):
    deliver(owner, "oi", "ST1")
    assert fake_redis.zscore(buffer.DUE, CID) is not None

    paused = post(owner, f"/panel/api/chats/{PID}/pause").get_json()
    assert paused["state"] == "paused" and paused["until"] > time.time() + 29 * 60
    assert fake_redis.zscore(buffer.DUE, CID) is None  # what was waiting is dropped
    assert deliver(owner, "alguém aí?", "ST2") == "paused"
    assert owner.get(f"/panel/api/chats/{PID}").get_json()["messages"][-1]["text"] == "alguém aí?"

    assert post(owner, f"/panel/api/chats/{PID}/resume").get_json()["state"] == "idle"
    assert deliver(owner, "voltou?", "ST3") == "scheduled"
    assert post(owner, f"/panel/api/chats/{PID}/stop").get_json()["state"] == "stopped"
    assert deliver(owner, "e agora?", "ST4") == "paused"
    assert post(owner, f"/panel/api/chats/{PID}/pause").get_json()["state"] == "stopped"  # a pause never lifts a stop
    assert post(owner, f"/panel/api/chats/{PID}/resume").get_json()["state"] == "idle"
    assert post(owner, "/panel/api/chats/0123456789abcdef0123/pause").status_code == 404


def test_answer_as_a_person_pauses_sends_through_the_chats_instance_and_logs_it(owner, fake_redis, evolution):
    deliver(owner, "quero falar com alguém", "HU1", instance="loja2")
    cid = buffer.chat_ref("loja2", f"{CUSTOMER}@s.whatsapp.net")

    answer = post(owner, f"/panel/api/chats/{chat_ids.public(PANEL_KEY.encode(), cid)}/reply", {"text": "Oi! Aqui é a Ana, da loja."})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["state"] == "paused"
    assert post(owner, f"/panel/api/chats/{chat_ids.public(PANEL_KEY.encode(), cid)}/reply", {"text": "Já separei o seu pedido."}).status_code == 200
    assert owner.get("/panel/api/stats").get_json()["days"][-1]["handoffs"] == 1  # one takeover, two answers
    assert evolution.sent_texts() == [("loja2", CUSTOMER, "Oi! Aqui é a Ana, da loja."),
                                      ("loja2", CUSTOMER, "Já separei o seu pedido.")]
    sent = evolution.sent_messages()[0]
    assert answer.get_json()["id"] == sent["key"]["id"]
    assert fake_redis.zscore(buffer.DUE, cid) is None

    # Evolution's echo of that message (send.message, fromMe) is the same record entry, not a second one: the
    # panel noted its id as seen, so the echo is a duplicate delivery, and the chat stays with the person
    echo = text_message("Oi! Aqui é a Ana, da loja.", sent["key"]["id"], instance="loja2",
                        timestamp=sent["messageTimestamp"], from_me=True)
    echo["event"] = "send.message"
    assert owner.post(f"/webhook?token={TOKEN}", json=echo).get_json()["results"] == ["duplicate"]
    assert chats.state(fake_redis, cid)["state"] == "paused"
    human = [turn["text"] for turn in memory.load_history(fake_redis, cid) if turn.get("by") == "human"]
    assert human == ["Oi! Aqui é a Ana, da loja.", "Já separei o seu pedido."]  # in history once, by the panel
    messages = owner.get(f"/panel/api/chats/{chat_ids.public(PANEL_KEY.encode(), cid)}").get_json()["messages"]
    assert [(m["from"], m["text"]) for m in messages] == [
        ("customer", "quero falar com alguém"), ("human", "Oi! Aqui é a Ana, da loja."),
        ("human", "Já separei o seu pedido.")]

    for bad in ({}, {"text": ""}, {"text": "   "}, {"text": 5}, {"text": "x" * 5000}):
        assert post(owner, f"/panel/api/chats/{chat_ids.public(PANEL_KEY.encode(), cid)}/reply", bad).status_code == 400, bad
    assert owner.post(f"/panel/api/chats/{chat_ids.public(PANEL_KEY.encode(), cid)}/reply", data="{not json", content_type="application/json",
                      headers={"X-CSRF-Token": owner.csrf}).status_code == 400


def test_a_failed_send_says_so(owner, evolution):
    deliver(owner, "oi", "FS1")
    evolution.fail_next("sendText", 400, message=[{"jid": "x", "exists": False}])
    response = post(owner, f"/panel/api/chats/{PID}/reply", {"text": "olá"})
    assert response.status_code == 502
    assert response.get_json()["error"] == ("Não foi enviada: o WhatsApp recusou a mensagem (erro 400). Confira se o "
                                           "número do cliente ainda usa WhatsApp e se a conexão está ativa em Saúde.")
    assert [m["from"] for m in owner.get(f"/panel/api/chats/{PID}").get_json()["messages"]] == ["customer"]


def test_a_person_answering_from_the_phone_is_logged_as_human(owner):
    deliver(owner, "oi", "PH1")
    assert owner.post(f"/webhook?token={TOKEN}", json=text_message("Já te respondo!", "PH2", from_me=True)
                      ).get_json()["results"] == ["paused"]
    chat = owner.get(f"/panel/api/chats/{PID}").get_json()
    assert [(m["from"], m["text"]) for m in chat["messages"]] == [("customer", "oi"), ("human", "Já te respondo!")]
    assert chat["state"] == "paused" and chat["name"] == "Cliente"  # the owner's pushName is not the customer's


def test_forget_erases_the_chat_everywhere(owner, fake_redis):
    deliver(owner, "meu CPF é 123", "FG1")
    response = post(owner, f"/panel/api/chats/{PID}/forget")
    assert response.status_code == 200 and response.get_json()["result"] == "forgotten"
    assert owner.get("/panel/api/chats").get_json()["chats"] == []
    assert owner.get(f"/panel/api/chats/{PID}").status_code == 404
    leftovers = [key for key in fake_redis.keys() if CID.encode() in key]
    assert leftovers == []
    assert fake_redis.zscore(buffer.DUE, CID) is None


# --- persona and try-it -----------------------------------------------------------------------------------

def test_prompts_read_and_write_files_next_to_the_system_prompt(owner, prompts, settings):
    system = owner.get("/panel/api/prompts/system").get_json()
    assert system["text"] == (prompts / "system.md").read_text() and system["exists"]
    assert owner.get("/panel/api/prompts/loja2").get_json() == {"name": "loja2", "text": "", "exists": False,
                                                               "overridden": False}

    assert owner.put("/panel/api/prompts/loja2", json={"text": "Você é a Bia."},
                     headers={"X-CSRF-Token": owner.csrf}).status_code == 200
    assert (prompts / "loja2.md").read_text() == "Você é a Bia.\n"
    import ai_service
    assert ai_service.load_system_prompt(settings, "loja2") == "Você é a Bia."

    put = lambda name, body: owner.put(f"/panel/api/prompts/{name}", json=body, headers={"X-CSRF-Token": owner.csrf})
    assert put("system", {"text": "Você é o Zé."}).status_code == 200
    assert ai_service.load_system_prompt(settings, "shop") == "Você é o Zé."
    assert put("system", {"text": "  "}).status_code == 400
    assert put("loja2", {"text": ""}).status_code == 200 and not (prompts / "loja2.md").exists()
    for bad in ("a.b", "..", "ç", "x" * 65, "a%2Fb", "system%0A", "loja%0A"):
        assert owner.get(f"/panel/api/prompts/{bad}").status_code in (400, 404), bad
        assert put(bad, {"text": "x"}).status_code in (400, 404), bad
    assert not any(p.name != "system.md" for p in prompts.iterdir())
    assert put("loja2", {"texto": "x"}).status_code == 400
    (prompts / "loja3.md").mkdir()  # something in the way: the answer says so, and nothing is left behind
    failed = put("loja3", {"text": "Você é o Tom."})
    assert failed.status_code == 500 and "Não foi possível salvar loja3.md" in failed.get_json()["error"]
    assert sorted(p.name for p in prompts.iterdir()) == ["loja3.md", "system.md"]
    assert "loja2" not in [p.stem for p in prompts.iterdir()]


def test_try_runs_the_reply_path_and_sends_nothing(owner, gemini, evolution, prompts):
    gemini.reply_with("Abrimos sim!\n\nDas 9h às 13h.")
    (prompts / "loja2.md").write_text("Você é a Bia da loja 2.")
    answer = post(owner, "/panel/api/try", {"instance": "loja2", "text": "abre sábado?"})
    assert answer.status_code == 200
    assert answer.get_json() == {"parts": ["Abrimos sim!", "Das 9h às 13h."]}
    assert gemini.system_text() == "Você é a Bia da loja 2."
    assert gemini.user_texts() == ["abre sábado?"]
    assert len(gemini.requests[-1]["body"]["contents"]) == 1  # no history

    assert post(owner, "/panel/api/try", {"instance": "", "text": "oi", "prompt": "Rascunho novo."}).status_code == 200
    assert gemini.system_text() == "Rascunho novo."
    assert evolution.requests == []

    gemini.fail_next(400)
    failed = post(owner, "/panel/api/try", {"instance": "", "text": "oi"})
    assert failed.status_code == 502 and "O Gemini não respondeu (Gemini answered 400" in failed.get_json()["error"]
    assert post(owner, "/panel/api/try", {"text": ""}).status_code == 400
    assert post(owner, "/panel/api/try", {"instance": "../x", "text": "oi"}).status_code == 400


# --- health, numbers, /metrics -----------------------------------------------------------------------------

def test_stats_count_messages_replies_tokens_and_latency(owner, fake_redis, settings, gemini):
    gemini.reply_with("Oi!")
    now = int(time.time())
    deliver(owner, "oi", "SN1", timestamp=now - 3)
    deliver(owner, "oi", "SN1", timestamp=now - 3)
    worker.process_chat(worker.make_context(settings, fake_redis), CID)
    deliver(owner, "outra", "SN2")  # carries the counts the webhook kept since its last pipeline

    today = owner.get("/panel/api/stats").get_json()["days"][-1]
    assert today["received"] == 3 and today["duplicates"] == 1 and today["replies"] == 1
    assert today["tokens"] == int(fake_redis.hget(stats.TOTAL, "tokens")) > 0
    assert 3 <= today["latency_p50"] < 30 and today["latency_p90"] >= today["latency_p50"]
    assert today["gemini_calls"] == 1

    health = owner.get("/panel/api/stats").get_json()["health"]
    assert health["redis"] == "ok" and health["queue"]["due_chats"] == 1


def test_health_shows_a_disconnected_number_loudly(owner, fake_redis):
    fake_redis.hset(stats.INSTANCES, mapping={
        "shop": json.dumps({"state": "open", "at": time.time()}),
        "loja2": json.dumps({"state": "close", "reason": 401, "at": time.time()})})
    stats.gemini_error(fake_redis, "Gemini answered 429 RESOURCE_EXHAUSTED")
    health = owner.get("/panel/api/stats").get_json()["health"]
    assert [(i["name"], i["connected"]) for i in health["instances"]] == [("loja2", False), ("shop", True)]
    assert health["gemini_last_error"]["reason"] == "Gemini answered 429 RESOURCE_EXHAUSTED"
    page = owner.get("/panel/health").get_data(as_text=True)
    assert "DESCONECTADO" in page and "loud" in page and "RESOURCE_EXHAUSTED" in page
    assert page.count("<svg") == 7  # one is prompt tokens, sent vs read from the cache


def test_metrics_need_the_webhook_token_and_speak_prometheus(client, fake_redis, settings, gemini):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics?token=wrong").status_code == 401
    deliver(client, "oi", "MT1")
    body = text_message("grupo", "MT2")
    body["data"]["key"]["remoteJid"] = "120363000000000000@g.us"
    client.post(f"/webhook?token={TOKEN}", json=body)
    deliver(client, "oi", "MT1")
    deliver(client, "mais uma", "MT1b")
    worker.process_chat(worker.make_context(settings, fake_redis), CID)
    deliver(client, "de novo", "MT3")

    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True)
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert values["whatsapp_received_total"] == "4"
    assert values['whatsapp_outcomes_total{outcome="buffered"}'] == "1"
    assert values["whatsapp_duplicates_total"] == "1"
    assert values['whatsapp_ignored_total{reason="group chat"}'] == "1"
    assert values["whatsapp_replies_total"] == "1"
    assert values["whatsapp_bursts_total"] == "1"
    assert values['whatsapp_gemini_seconds_bucket{le="+Inf"}'] == values["whatsapp_gemini_seconds_count"] == "1"
    assert values["whatsapp_waiting_chats"] == "1"
    assert int(values["whatsapp_queue_depth"]) >= 1
    assert "# TYPE whatsapp_gemini_seconds histogram" in text


def test_the_webhook_flushes_lone_counts_after_a_while(fake_redis):
    tally = stats.Tally(max_age=0)
    tally.add("ignored:group chat")
    tally.add("ignored:group chat")
    tally.flush_if_due(fake_redis)
    assert fake_redis.hget(stats.TOTAL, "ignored:group chat") == b"2"
    tally.flush_if_due(fake_redis)
    assert fake_redis.hget(stats.TOTAL, "ignored:group chat") == b"2"


# --- the chat's record, as the panel reads it ------------------------------------------------------------

def test_the_record_is_capped_expires_with_history_and_stores_a_message_once(make_settings, fake_redis):
    settings = make_settings(LOG_MAX_ENTRIES=3, HISTORY_TTL_DAYS=2)
    start = int(time.time()) - 100
    for i in range(5):
        assert memory.record_human(fake_redis, "c1", f"id{i}", f"m{i}", start + i, settings)
        assert not memory.record_human(fake_redis, "c1", f"id{i}", f"m{i}", start + i, settings)  # its echo, say
    assert [e["text"] for e in memory.thread(fake_redis, "c1")] == ["m2", "m3", "m4"]
    assert 2 * 86400 - 5 < fake_redis.ttl(memory.key("c1")) <= 2 * 86400
    assert fake_redis.ttl(memory.meta_key("c1")) > 0
    assert memory.chats(fake_redis)[0]["last_text"] == "m4"
    fake_redis.zadd(memory.CHATS, {"stale": time.time() - 3 * 86400})  # its record expired a day ago
    memory.record_human(fake_redis, "c2", "id9", "m9", time.time(), settings)
    assert [c.decode() for c in fake_redis.zrange(memory.CHATS, 0, -1)] == ["c1", "c2"]
    pipe = fake_redis.pipeline()
    memory.erase(pipe, "c1")
    pipe.execute()
    assert memory.thread(fake_redis, "c1") == [] and [c["id"] for c in memory.chats(fake_redis)] == ["c2"]


def test_worker_forget_erases_the_record_too(make_settings, fake_redis, owner):
    deliver(owner, "apaga meus dados", "WF1")
    assert fake_redis.exists(memory.key(CID)) and fake_redis.exists(memory.ids_key(CID))
    chats.forget_customer(fake_redis, INSTANCE, CUSTOMER)  # what `worker.py forget` runs
    assert [key for key in fake_redis.keys() if CID.encode() in key] == []
    assert fake_redis.zscore(memory.CHATS, CID) is None


# --- chats: state and a person's actions ----------------------------------------------------------------------

def test_chat_state_follows_the_burst_the_job_and_the_pauses(make_settings, fake_redis, queue):
    settings = make_settings(DEBOUNCE_SECONDS=20, HANDOFF_PAUSE_MINUTES=10)
    message, = parser.parse_body(text_message("oi", "CS1"))
    assert chats.state(fake_redis, CID) == {"state": "idle", "until": None}
    buffer.add_message(fake_redis, message, settings, now=1000.0)
    assert chats.state(fake_redis, CID, now=1001.0) == {"state": "waiting", "until": 1020.0}
    assert buffer.claim(fake_redis, CID, 60, now=1021.0)[0] == "ready"
    assert chats.state(fake_redis, CID)["state"] == "answering"

    assert chats.take_over(fake_redis, CID, settings) == "paused"
    state = chats.state(fake_redis, CID, now=5000.0)
    assert state["state"] == "paused" and 5000 + 590 < state["until"] <= 5000 + 600
    assert not fake_redis.exists(buffer.keys(CID)["lock"])  # the running job lost its lease
    assert fake_redis.zscore(buffer.DUE, CID) is None

    assert chats.stop(fake_redis, CID, settings) == "stopped"
    assert chats.state(fake_redis, CID) == {"state": "stopped", "until": None}
    assert chats.hand_back(fake_redis, CID, settings) == "resumed"
    fake_redis.set(buffer.keys(CID)["optout"], "1", ex=3600)  # the customer opted out
    assert chats.state(fake_redis, CID)["state"] == "stopped"
    chats.hand_back(fake_redis, CID, settings)
    assert chats.state(fake_redis, CID)["state"] == "idle"
