"""Issue 20 on real processes: gunicorn (and the worker) against a real redis-server, driven over HTTP.

Sessions that end, throttled passwords behind a shared address, keyed chat ids in logs and URLs,
replayed signed deliveries, headers, /health, body memory, the persona's try-it and the owner's alert.
"""

import hashlib
import hmac
import io
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from itsdangerous import BadSignature, URLSafeTimedSerializer
from twilio.request_validator import RequestValidator

import buffer
import chat_ids
from conftest import CUSTOMER, GRAPH_TOKEN, INSTANCE, PANEL_KEY, PAYLOADS, TOKEN, _descendants, free_port, text_message, wait_until

PASSWORD = "senha-do-painel-teste"
CID = buffer.chat_ref(INSTANCE, f"{CUSTOMER}@s.whatsapp.net")
PID = chat_ids.public(PANEL_KEY.encode(), CID)


@pytest.fixture
def panel_server(bot_env, redis_server, processes):
    """Start one gunicorn webhook with the panel on the real Redis; returns its base URL."""

    def start(expect_up=True, **overrides):
        env = {**bot_env, "REDIS_URL": redis_server.url, "PORT": str(free_port()), "PANEL_PASSWORD": PASSWORD,
               **{k.upper(): str(v) for k, v in overrides.items()}}
        start.proc = processes("webhook", env)
        url = f"http://127.0.0.1:{env['PORT']}"
        if expect_up:
            wait_until(lambda: up(url), timeout=30, message="gunicorn to answer")
        return url

    return start


def up(url):
    try:
        return requests.get(f"{url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def login_form(browser, url):
    """GET the login page; returns the form's CSRF token (its twin is in the browser's `panel_login` cookie)."""
    page = browser.get(f"{url}/panel/login", timeout=10)
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def log_in(browser, url, password=PASSWORD, headers=None):
    token = login_form(browser, url)
    return browser.post(f"{url}/panel/login", data={"password": password, "csrf_token": token},
                        allow_redirects=False, headers=headers or {}, timeout=10)


def owner(url):
    browser = requests.Session()
    assert log_in(browser, url).status_code == 302
    browser.csrf = browser.get(f"{url}/panel/api/session", timeout=10).json()["csrf_token"]
    return browser


def copy_of(browser):
    """Another client holding the same cookies, as someone who copied them would."""
    thief = requests.Session()
    thief.cookies.update(browser.cookies)
    return thief


# --- 1. sessions live in Redis, end on logout and never stretch ------------------------------------

def test_a_session_is_an_id_in_the_cookie_ends_on_logout_and_is_never_extended(panel_server, redis_server):
    url = panel_server()
    redis = redis_server.client()
    before = time.time()
    browser = owner(url)
    sid = browser.cookies.get("panel_session", path="/panel")
    key, = redis.smembers("wa:panel:sessions")
    assert sid.encode() not in key and redis.exists(key)
    expires = int(redis.hget(key, "expires"))
    assert before + 12 * 3600 - 2 <= expires <= time.time() + 12 * 3600
    assert redis.execute_command("EXPIRETIME", key) == expires  # Redis drops it at that very second

    time.sleep(1.1)
    for path in ("/panel/", "/panel/api/chats", "/panel/api/session", "/panel/static/panel.js", "/panel/health"):
        response = browser.get(f"{url}{path}", timeout=10)
        assert response.status_code == 200, path
        assert "panel_session" not in response.headers.get("Set-Cookie", ""), path  # never re-issued
    assert redis.execute_command("EXPIRETIME", key) == expires and int(redis.hget(key, "expires")) == expires

    thief = copy_of(browser)
    assert thief.get(f"{url}/panel/api/chats", timeout=10).status_code == 200
    assert browser.post(f"{url}/panel/logout", data={"csrf_token": browser.csrf}, allow_redirects=False,
                        timeout=10).status_code == 302
    assert not redis.exists(key)
    assert thief.get(f"{url}/panel/api/chats", timeout=10).status_code == 401
    assert thief.post(f"{url}/panel/api/chats/{PID}/pause", headers={"X-CSRF-Token": browser.csrf},
                      timeout=10).status_code == 401
    assert thief.get(f"{url}/panel/api/chats/{PID}?reveal=1", timeout=10).status_code == 401


def test_leaving_every_device_ends_every_session(panel_server, redis_server):
    url = panel_server()
    phone, laptop = owner(url), owner(url)
    stolen = copy_of(laptop)
    assert len(redis_server.client().smembers("wa:panel:sessions")) == 2
    page = phone.get(f"{url}/panel/health", timeout=10).text
    assert 'id="logout-all"' in page and "Sair de todos os aparelhos" in page
    assert phone.post(f"{url}/panel/api/logout-all", timeout=10).status_code == 403  # CSRF still needed
    done = phone.post(f"{url}/panel/api/logout-all", headers={"X-CSRF-Token": phone.csrf}, timeout=10)
    assert done.status_code == 200
    for client in (phone, laptop, stolen):
        assert client.get(f"{url}/panel/api/chats", timeout=10).status_code == 401
    assert redis_server.client().keys("wa:panel:session*") == []

    tablet = owner(url)  # the form button on every page does the same
    form = tablet.post(f"{url}/panel/logout-all", data={"csrf_token": tablet.csrf}, allow_redirects=False, timeout=10)
    assert form.status_code == 302 and form.headers["Location"].endswith("/panel/login")
    assert tablet.get(f"{url}/panel/api/chats", timeout=10).status_code == 401


# --- 2. the panel's own key; weak passwords refused at start-up -----------------------------------

@pytest.mark.parametrize("overrides, line", [
    ({"PANEL_SECRET_KEY": ""}, "PANEL_SECRET_KEY: falta ou tem menos de 32 caracteres"),
    ({"PANEL_PASSWORD": "padariadosol2024", "EVOLUTION_INSTANCE": "padariadosol"},
     "PANEL_PASSWORD: fraca (contém o nome da instância)"),
    ({"PANEL_PASSWORD": "x" * 24}, "PANEL_PASSWORD: fraca (é um mesmo trecho curto repetido)"),
])
def test_the_webhook_refuses_to_start_with_no_panel_key_or_a_weak_password(panel_server, overrides, line):
    url = panel_server(expect_up=False, **overrides)
    wait_until(lambda: panel_server.proc.process.poll() is not None, timeout=30, message="gunicorn to stop")
    assert line in panel_server.proc.output() and not up(url)


def test_cookies_are_signed_with_the_panel_key_not_the_webhook_token(panel_server):
    """Whoever holds WEBHOOK_TOKEN and PANEL_PASSWORD cannot forge a known-device cookie without the key."""
    url = panel_server()
    browser = owner(url)
    device = browser.cookies.get("panel_device", path="/panel")
    assert URLSafeTimedSerializer(PANEL_KEY, salt="panel-device").loads(device)
    for key in (TOKEN, PASSWORD, f"panel\n{TOKEN}"):
        with pytest.raises(BadSignature):
            URLSafeTimedSerializer(key, salt="panel-device").loads(device)


# --- 3. throttling: atomic, global, behind a proxy, never against the owner's device ---------------

def test_parallel_guesses_cannot_race_past_the_limit_and_the_owners_browser_still_gets_in(panel_server):
    url = panel_server()
    shop = requests.Session()  # the owner's phone: logged in yesterday, behind the same address
    assert log_in(shop, url).status_code == 302
    shop.cookies.set("panel_session", None, path="/panel")  # logged out since

    attacker = requests.Session()
    token = login_form(attacker, url)

    def guess(i):
        return attacker.post(f"{url}/panel/login", data={"password": f"chute-{i}", "csrf_token": token},
                             allow_redirects=False, timeout=20).status_code

    with ThreadPoolExecutor(16) as pool:  # one burst, well within the 1 s wait that follows the 5th failure
        codes = list(pool.map(guess, range(16)))
    assert codes.count(401) == 5 and codes.count(429) == 11  # FREE_TRIES compared, whatever the concurrency
    spoofed = log_in(attacker, url, headers={"X-Forwarded-For": "203.0.113.9"})  # no TRUSTED_PROXY: ignored
    assert spoofed.status_code == 429 and "Tente de novo em" in spoofed.text
    forged = requests.Session()
    forged.cookies.set("panel_device", "eyJmYWtlIjoxfQ.forged.signature", path="/panel")
    assert log_in(forged, url).status_code == 429  # a forged device cookie is no device

    assert log_in(shop, url).status_code == 302  # the owner's own browser, right password: straight in
    assert shop.get(f"{url}/panel/api/chats", timeout=10).status_code == 200


def test_failures_have_a_global_budget_and_addresses_come_from_the_trusted_proxy_only(panel_server):
    url = panel_server(trusted_proxy="127.0.0.1", panel_max_failed_logins_per_hour=6)
    shop = requests.Session()
    assert log_in(shop, url, headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 302
    shop.cookies.set("panel_session", None, path="/panel")  # logged out since

    for i in range(6):  # six addresses, one guess each: no address is throttled, but the hour's budget is spent
        forwarded = f"203.0.113.{i}, 10.0.0.{i}" if i % 2 else f"203.0.113.{i}"  # the proxy appends the real one
        attacker = requests.Session()
        assert log_in(attacker, url, password="chute", headers={"X-Forwarded-For": forwarded}).status_code == 401
    late = log_in(requests.Session(), url, headers={"X-Forwarded-For": "192.0.2.77"})
    assert late.status_code == 429 and "Tente de novo em" in late.text  # even the right password, from a stranger
    assert log_in(shop, url, headers={"X-Forwarded-For": "192.0.2.78"}).status_code == 302  # the owner's device


# --- 4. chat ids outside Redis are keyed ---------------------------------------------------------

def test_logs_and_panel_urls_carry_a_keyed_chat_id_never_the_plain_hash(start_stack, gemini, evolution):
    stack = start_stack(panel_password=PASSWORD, debounce_seconds=0)
    gemini.reply_with("Oi! Posso ajudar?")
    stack.post(text_message("quero falar com um atendente", "KEY1"))  # pauses: the worker logs the chat
    stack.post(text_message("oi", "KEY2", number="5511988887777"))
    wait_until(lambda: len(evolution.sent_texts()) >= 2, timeout=30, message="both answers")
    browser = owner(stack.url)
    inbox = browser.get(f"{stack.url}/panel/", timeout=10).text
    assert f"/panel/chats/{PID}" in inbox and CID not in inbox
    assert browser.get(f"{stack.url}/panel/chats/{PID}", timeout=10).status_code == 200
    assert browser.get(f"{stack.url}/panel/chats/{CID}", timeout=10).status_code == 404  # the plain hash opens nothing
    assert browser.post(f"{stack.url}/panel/api/chats/{PID}/pause", headers={"X-CSRF-Token": browser.csrf},
                        timeout=10).status_code == 200
    logs = stack.webhook.output() + "".join(worker.output() for worker in stack.workers)
    assert f"chat {PID}" in logs  # the worker's lines and the panel's name the chat by its keyed id
    other = buffer.chat_ref(INSTANCE, "5511988887777@s.whatsapp.net")
    assert CID not in logs and other not in logs
    assert not re.search(r"(?<![0-9a-f])[0-9a-f]{20}(?![0-9a-f])", logs)  # no ref-shaped id at all


def test_the_log_filter_keys_refs_in_messages_and_tracebacks_but_leaves_other_ids():
    log = logging.getLogger("test.chat_ids")
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(chat_ids.LogFilter(PANEL_KEY.encode()))
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    try:
        log.warning("chat %s: %d%% done, job %s", CID, 50, "480f8d76e80644de9152756f8b447a7b")
        try:
            raise KeyError(f"wa:log:{CID}")
        except KeyError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = handler.stream.getvalue()
    assert f"chat {PID}: 50% done, job 480f8d76e80644de9152756f8b447a7b" in text
    assert f"wa:log:{PID}" in text and CID not in text


# --- 6. a signed delivery replayed after the dedupe forgot it ---------------------------------------

TWILIO_URL = "https://bot.example.com/webhook/twilio"


def test_a_signed_twilio_delivery_replayed_after_the_dedupe_window_is_not_answered(start_stack, gemini, twilio_api):
    stack = start_stack(twilio_account_sid=twilio_api.account_sid, twilio_auth_token=twilio_api.auth_token,
                        twilio_webhook_url=TWILIO_URL, twilio_api_url=twilio_api.url, dedupe_ttl_seconds=2)
    form = dict(json.loads((PAYLOADS / "twilio_webhooks.json").read_text())["text"])
    form.update(MessageSid="SMREPLAY1", SmsMessageSid="SMREPLAY1", SmsSid="SMREPLAY1")
    signature = RequestValidator(twilio_api.auth_token).compute_signature(TWILIO_URL, form)

    def deliver():
        response = requests.post(f"{stack.url}/webhook/twilio", data=form, headers={"X-Twilio-Signature": signature},
                                 timeout=20)
        assert response.status_code == 200, response.text

    gemini.reply_with("Oi! Tudo bem?")
    deliver()
    wait_until(twilio_api.texts, timeout=30, message="the first answer")
    time.sleep(3)  # DEDUPE_TTL_SECONDS passed: the normal dedupe has forgotten the id
    deliver()  # the same signed request, captured and replayed
    time.sleep(3)  # an answer would come within DEBOUNCE_SECONDS=1
    assert len(gemini.requests) == 1 and len(twilio_api.texts()) == 1
    assert "seen in the last 30 days; not answered again" in stack.webhook.output()
    day_set, = stack.redis.client().keys("wa:replay:*")  # one set a day, of 8-byte digests
    assert [len(member) for member in stack.redis.client().smembers(day_set)] == [8]
    assert 30 * 86400 < stack.redis.client().ttl(day_set) <= 31 * 86400


def test_a_signed_cloud_delivery_is_answered_once_in_30_days_and_never_when_older_than_the_backlog_guard(
        start_stack, gemini, graph):
    secret = "test-app-secret-0123456789"
    stack = start_stack(whatsapp_token=GRAPH_TOKEN, whatsapp_app_secret=secret, whatsapp_verify_token="verify-0123456789",
                        whatsapp_graph_url=graph.url, dedupe_ttl_seconds=2)

    def delivery(message_id, timestamp):
        body = json.loads((PAYLOADS / "cloud_api_webhooks.json").read_text())["text"]
        message, = body["entry"][0]["changes"][0]["value"]["messages"]
        message.update(id=message_id, timestamp=str(int(timestamp)))
        raw = json.dumps(body).encode()
        signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        return lambda: requests.post(f"{stack.url}/webhook/cloud", data=raw, timeout=20, headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": signature}).json()

    gemini.reply_with("Oi!")
    fresh = delivery("wamid.REPLAY1", time.time())
    assert fresh()["results"] == ["scheduled"]
    wait_until(graph.texts, timeout=30, message="the first answer")
    time.sleep(3)  # past DEDUPE_TTL_SECONDS
    assert fresh()["results"] == ["duplicate"]  # remembered for 30 days
    assert delivery("wamid.OLD1", time.time() - 3600)()["results"] == ["ignored"]  # older than MAX_MESSAGE_AGE_SECONDS
    time.sleep(2)
    assert len(gemini.requests) == 1 and len(graph.texts()) == 1


# --- 7. headers and /health ---------------------------------------------------------------------

def test_panel_pages_send_the_security_headers_and_health_hides_its_details(panel_server):
    url = panel_server()
    browser = requests.Session()
    for path in ("/panel/login", "/panel/static/panel.js", "/panel/static/panel.css"):
        headers = browser.get(f"{url}{path}", timeout=10).headers
        assert headers["Content-Security-Policy"] == "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'", path
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "same-origin", path
    browser = owner(url)
    for path in ("/panel/", "/panel/persona", "/panel/health", "/panel/api/chats"):
        assert browser.get(f"{url}{path}", timeout=10).headers["Content-Security-Policy"].startswith("default-src 'self'")
    for template in Path(__file__).resolve().parent.parent.joinpath("templates", "panel").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=", text), template.name

    assert requests.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
    detailed = {"status": "ok", "redis": "ok", "instances": {}}
    assert requests.get(f"{url}/health", params={"token": TOKEN}, timeout=10).json() == detailed
    assert requests.get(f"{url}/health", params={"token": "wrong"}, timeout=10).json() == {"status": "ok"}
    session = browser.cookies.get("panel_session", path="/panel")  # the cookie's path is /panel: sent by hand
    assert requests.get(f"{url}/health", cookies={"panel_session": session}, timeout=10).json() == detailed
    assert requests.get(f"{url}/health", cookies={"panel_session": "forged"}, timeout=10).json() == {"status": "ok"}


# --- 8. memory: a body of many small values; the persona's try-it ---------------------------------

def peak_rss_kb(pid):
    """The process's highest resident memory so far (VmHWM): parsing's objects are freed before we can look."""
    return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


def test_a_16_mib_body_of_tiny_values_is_refused_before_it_is_parsed(panel_server):
    url = panel_server(gunicorn_workers=1)
    worker_pid, = _descendants(panel_server.proc.process.pid)
    body = b"[" + b"{}," * (16 * 1024 * 1024 // 3 - 1) + b"{}]"
    before = peak_rss_kb(worker_pid)
    response = requests.post(f"{url}/webhook", params={"token": TOKEN}, data=body,
                             headers={"Content-Type": "application/json"}, timeout=120)
    grown_mb = (peak_rss_kb(worker_pid) - before) / 1024
    print(f"16 MiB of {{}}: HTTP {response.status_code}, webhook worker's peak grew {grown_mb:.0f} MB")
    assert response.status_code == 413 and "JSON values" in response.json()["error"]
    assert grown_mb < 80  # the body itself, read once; parsing it grew the worker by ~440 MB

    big_string = json.dumps({"event": "presence.update", "instance": INSTANCE, "data": {"blob": "A" * 12_000_000}})
    ok = requests.post(f"{url}/webhook", params={"token": TOKEN}, data=big_string,
                       headers={"Content-Type": "application/json"}, timeout=120)
    assert ok.status_code == 200  # a large body of one long string (inline media) still passes


def test_try_it_caps_the_prompt_and_counts_in_the_gemini_budget(panel_server, gemini):
    url = panel_server(gemini_max_calls_per_hour=2)
    browser = owner(url)
    headers = {"X-CSRF-Token": browser.csrf}
    huge = browser.post(f"{url}/panel/api/try", json={"text": "oi", "prompt": "x" * 5_000_000}, headers=headers,
                        timeout=60)
    assert huge.status_code == 400 and "100000" in huge.json()["error"] and gemini.requests == []
    gemini.reply_with("Oi!")
    for _ in range(2):
        assert browser.post(f"{url}/panel/api/try", json={"text": "oi"}, headers=headers, timeout=30).status_code == 200
    spent = browser.post(f"{url}/panel/api/try", json={"text": "oi"}, headers=headers, timeout=30)
    assert spent.status_code == 429 and "GEMINI_MAX_CALLS_PER_HOUR" in spent.json()["error"]
    assert len(gemini.requests) == 2


# --- 9. the owner's alert -------------------------------------------------------------------------

def test_the_owners_alert_marks_the_customers_words_and_no_link_in_them_is_clickable(start_stack, gemini, evolution):
    owner_number = "5511999990077"
    stack = start_stack(owner_number=owner_number)
    stack.post(text_message("quero falar com um atendente\nPague em https://evil.example.com/pix ou www.golpe.example",
                            "LINK1"))
    wait_until(lambda: any(number == owner_number for _, number, _ in evolution.sent_texts()), timeout=30,
               message="the owner's alert")
    alert, = [text for _, number, text in evolution.sent_texts() if number == owner_number]
    quoted = [line for line in alert.splitlines() if line.startswith("Mensagem do cliente: “")]
    assert len(quoted) == 1 and "hxxps[:]//evil[.]example[.]com/pix" in quoted[0] and "www[.]golpe[.]example" in quoted[0]
    assert not re.search(r"https?://|www\.|\.example", alert)
