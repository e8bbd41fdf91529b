"""The network-edge fakes answer like the real services, and can fail like them."""

import base64
import threading
import time

import pytest
import requests
from google import genai
from google.genai import errors, types

from fakes import FakeEvolution, FakeGemini, create_jid

KEY = "test-key"


@pytest.fixture
def evo():
    with FakeEvolution(api_key=KEY, instances={"shop", "Ivo Teste"}, time_scale=0) as fake:
        yield fake


def post(evo, path, body=None, key=KEY, timeout=5):
    headers = {"apikey": key} if key is not None else {}
    return requests.post(evo.url + path, json=body, headers=headers, timeout=timeout)


# --- Evolution ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key", [None, "wrong"])
def test_evolution_rejects_missing_or_wrong_apikey(evo, key):
    r = post(evo, "/message/sendText/shop", {"number": "5511999999999", "text": "oi"}, key=key)
    assert r.status_code == 401
    assert r.json() == {"status": 401, "error": "Unauthorized", "response": {"message": "Unauthorized"}}
    assert evo.sent_texts() == []


def test_evolution_accepts_instance_token():
    with FakeEvolution(api_key=KEY, instances={"shop": "shop-token"}) as fake:
        assert post(fake, "/chat/markMessageAsRead/shop", {"readMessages": [
            {"remoteJid": "5511999999999@s.whatsapp.net", "fromMe": False, "id": "ABC"}]},
            key="shop-token").json() == {"message": "Read messages", "read": "success"}


def test_evolution_unknown_instance_is_404_even_before_auth(evo):
    for key in (KEY, None):
        r = post(evo, "/message/sendText/nope", {"number": "1", "text": "x"}, key=key)
        assert r.status_code == 404
        assert r.json() == {"status": 404, "error": "Not Found",
                            "response": {"message": ['The "nope" instance does not exist']}}


def test_evolution_send_text_success_has_payload_17_shape(evo):
    r = post(evo, "/message/sendText/Ivo%20Teste", {"number": "5582999999923", "text": "teste", "delay": 1200})
    assert r.status_code == 201
    msg = r.json()
    assert msg["key"]["remoteJid"] == "558299999923@s.whatsapp.net"  # BR 9th digit normalized
    assert msg["key"]["fromMe"] is True
    assert len(msg["key"]["id"]) == 22 and msg["key"]["id"].startswith("3EB0")
    assert msg["key"]["id"] == msg["key"]["id"].upper()
    assert msg["message"] == {"conversation": "teste"}
    assert msg["status"] == "PENDING" and msg["messageType"] == "conversation"
    assert isinstance(msg["messageTimestamp"], int)
    assert evo.sent_texts() == [("Ivo Teste", "5582999999923", "teste")]
    again = post(evo, "/message/sendText/Ivo%20Teste", {"number": "5582999999923", "text": "teste"}).json()
    assert again["key"]["id"] != msg["key"]["id"]
    assert evo.requests[0]["instance"] == "Ivo Teste" and evo.requests[0]["route"] == "sendText"


def test_evolution_send_text_validation_errors(evo):
    r = post(evo, "/message/sendText/shop", {"number": "5511999999999"})
    assert r.status_code == 400
    assert r.json() == {"status": 400, "error": "Bad Request",
                        "response": {"message": [['instance requires property "text"']]}}
    r = post(evo, "/message/sendText/shop", {"number": 5511, "text": "x", "delay": "1s"})
    assert r.json()["response"]["message"] == [["Invalid format", "Enter a value in milliseconds"]]
    r = post(evo, "/message/sendText/shop", {"number": "5511999999999", "text": "   "})
    assert (r.status_code, r.json()["response"]["message"]) == (400, ["Text is required"])
    assert evo.sent_texts() == []


def test_evolution_number_not_on_whatsapp(evo):
    evo.not_on_whatsapp.add("5511988887777")
    r = post(evo, "/message/sendText/shop", {"number": "5511988887777", "text": "oi"})
    assert r.status_code == 400
    assert r.json()["response"]["message"] == [
        {"jid": "5511988887777@s.whatsapp.net", "exists": False, "number": "5511988887777"}]


def test_evolution_presence_read_and_media(evo):
    r = post(evo, "/chat/sendPresence/shop", {"number": "5511999999999", "presence": "composing", "delay": 500})
    assert (r.status_code, r.json()) == (201, {"presence": "composing"})
    r = post(evo, "/chat/sendPresence/shop", {"number": "5511999999999", "presence": "typing"})
    assert r.json()["response"]["message"] == [[
        "presence is not one of enum values: unavailable,available,composing,recording,paused",
        'instance requires property "delay"']]

    evo.add_media("3EB0AUDIO", "audio/ogg; codecs=opus", b"OggS-data")
    r = post(evo, "/chat/getBase64FromMediaMessage/shop", {"message": {"key": {"id": "3EB0AUDIO"}}})
    assert r.status_code == 201
    media = r.json()
    assert media["mediaType"] == "audioMessage" and media["fileName"] == "3EB0AUDIO.oga"
    assert media["mimetype"] == "audio/ogg; codecs=opus" and base64.b64decode(media["base64"]) == b"OggS-data"
    assert post(evo, "/chat/getBase64FromMediaMessage/shop", {"message": {"key": {"id": "3EB0AUDIO"}},
                                                             "convertToMp4": True}).json()["mimetype"] == "audio/mp4"
    r = post(evo, "/chat/getBase64FromMediaMessage/shop", {"message": {"key": {"id": "UNKNOWN"}}})
    assert (r.status_code, r.json()["response"]["message"]) == (400, ["Message not found"])


def test_evolution_scripted_faults_in_order(evo):
    body = {"number": "5511999999999", "text": "oi"}
    evo.fail_next("sendText", status=500, times=2)
    evo.fail_next("sendText", status="drop")
    assert post(evo, "/message/sendText/shop", body).status_code == 500
    assert post(evo, "/message/sendText/shop", body).json()["error"] == "Internal Server Error"
    with pytest.raises(requests.ConnectionError):
        post(evo, "/message/sendText/shop", body)
    assert post(evo, "/chat/sendPresence/shop", {"number": "1", "presence": "paused", "delay": 0}).status_code == 201
    assert post(evo, "/message/sendText/shop", body).status_code == 201
    assert evo.sent_texts() == [("shop", "5511999999999", "oi")]

    evo.delay_next("sendText", seconds=0.5)
    with pytest.raises(requests.Timeout):  # the client gives up, Evolution still sends the message
        post(evo, "/message/sendText/shop", body, timeout=0.1)
    evo.wait_for(2, timeout=2)


def test_evolution_down_refuses_connections_and_up_rebinds_same_port(evo):
    url = evo.url
    evo.down()
    with pytest.raises(requests.ConnectionError):
        post(evo, "/message/sendText/shop", {"number": "1", "text": "x"})
    evo.up()
    assert evo.url == url
    assert post(evo, "/message/sendText/shop", {"number": "1", "text": "x"}).status_code == 201


def test_create_jid_matches_evolution():
    assert create_jid("5582999999923") == "558299999923@s.whatsapp.net"   # DDD >= 31, drops the 9
    assert create_jid("5511999999999") == "5511999999999@s.whatsapp.net"  # DDD < 31 keeps it
    assert create_jid("+55 (85) 99999-9914") == "558599999914@s.whatsapp.net"
    assert create_jid("123@lid") == "123@lid"


# --- Gemini through the real google-genai SDK ----------------------------------------------------

@pytest.fixture
def gem():
    with FakeGemini(api_key="g-key") as fake:
        yield fake


def client(fake, key=None, timeout_ms=5000, retry=types.HttpRetryOptions(attempts=1)):
    return genai.Client(api_key=key or fake.api_key, http_options=types.HttpOptions(
        base_url=fake.url, timeout=timeout_ms, retry_options=retry))


def ask(c, contents="Oi", **config):
    return c.models.generate_content(model="gemini-2.5-flash", contents=contents,
                                     config=types.GenerateContentConfig(system_instruction="Seja breve.", **config))


def test_gemini_answers_real_sdk_and_records_request(gem):
    audio = types.Part.from_bytes(data=b"\x01\x02", mime_type="audio/ogg")
    response = ask(client(gem), ["Olá", "tudo bem?", audio])
    assert response.text == "Resposta automática #1"
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    req = gem.requests[0]
    assert req["path"] == "/v1/models/gemini-2.5-flash:generateContent"
    assert req["headers"]["x-goog-api-key"] == "g-key"
    assert gem.user_texts(0) == ["Olá", "tudo bem?"]
    assert gem.system_text(0) == "Seja breve."
    assert gem.inline_data(0) == [("audio/ogg", b"\x01\x02")]
    gem.reply_with("Bom dia!")
    assert ask(client(gem)).text == "Bom dia!"
    gem.responder = lambda body: body["contents"][-1]["parts"][0]["text"].upper()
    assert ask(client(gem), "eco").text == "ECO"


def test_gemini_wrong_key_is_client_error(gem):
    with pytest.raises(errors.ClientError) as exc:
        ask(client(gem, key="bad"))
    assert exc.value.code == 400 and exc.value.status == "INVALID_ARGUMENT"
    assert exc.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"


@pytest.mark.parametrize("status, cls, google_status", [
    (429, errors.ClientError, "RESOURCE_EXHAUSTED"),
    (500, errors.ServerError, "INTERNAL"),
    (503, errors.ServerError, "UNAVAILABLE"),
])
def test_gemini_scripted_errors_raise_sdk_errors(gem, status, cls, google_status):
    gem.fail_next(status=status)
    with pytest.raises(cls) as exc:
        ask(client(gem))
    assert (exc.value.code, exc.value.status) == (status, google_status)
    assert ask(client(gem)).text  # the fault was consumed


def test_gemini_sdk_does_not_retry_by_default_but_retries_when_configured(gem):
    gem.fail_next(status=503, times=2)
    with pytest.raises(errors.ServerError):
        ask(genai.Client(api_key=gem.api_key, http_options=types.HttpOptions(base_url=gem.url)))
    assert len(gem.requests) == 1
    retry = types.HttpRetryOptions(attempts=3, initial_delay=0.01, max_delay=0.05)
    assert ask(client(gem, retry=retry)).text  # one more 503, then success
    assert [r["status"] for r in gem.requests] == [503, 503, 200]


def test_gemini_blocked_and_empty_responses_give_text_none(gem):
    gem.block_next()
    blocked = ask(client(gem))
    assert blocked.text is None and not blocked.candidates
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    gem.empty_next()
    empty = ask(client(gem))
    assert empty.text is None
    assert empty.candidates[0].finish_reason == types.FinishReason.SAFETY


def test_gemini_timeout_and_drop_raise_transport_errors(gem):
    import httpx2  # what google-genai uses here (httpx is not installed)
    gem.delay_next(1.0)
    with pytest.raises(httpx2.TimeoutException):
        ask(client(gem, timeout_ms=200))
    gem.fail_next(status="drop")
    with pytest.raises(httpx2.RemoteProtocolError):
        ask(client(gem))


def test_gemini_hold_keeps_request_waiting_until_release(gem):
    gem.hold()
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("text", ask(client(gem)).text))
    worker.start()
    gem.wait_for(1, timeout=2)  # arrived and recorded while held
    time.sleep(0.1)
    assert "text" not in result
    gem.release()
    worker.join(2)
    assert result["text"] == "Resposta automática #1"


def test_gemini_rejects_empty_contents_like_google(gem):
    r = requests.post(f"{gem.url}/v1beta/models/gemini-2.5-flash:generateContent",
                      headers={"x-goog-api-key": gem.api_key}, json={"contents": []}, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    r = requests.post(f"{gem.url}/v1beta/models/gemini-2.5-flash:generateContent", json={"contents": []}, timeout=5)
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"


# --- Evolution: what the doctor reads ------------------------------------------------------------

def get(evo, path, key=KEY):
    return requests.get(evo.url + path, headers={"apikey": key} if key is not None else {}, timeout=5)


def test_connection_state_follows_set_state_and_the_guards(evo):
    assert get(evo, "/instance/connectionState/shop").json() == {"instance": {"instanceName": "shop", "state": "open"}}
    evo.set_state("Ivo Teste", "close", 401)
    assert get(evo, "/instance/connectionState/Ivo%20Teste").json()["instance"]["state"] == "close"
    missing = get(evo, "/instance/connectionState/nope", key="wrong")  # the instance guard runs before the key's
    assert (missing.status_code, missing.json()["response"]["message"]) == (404, ['The "nope" instance does not exist'])
    assert get(evo, "/instance/connectionState/shop", key="wrong").status_code == 401
    assert get(evo, "/instance/connectionState/shop", key=None).status_code == 401
    assert requests.post(evo.url + "/instance/connectionState/shop", headers={"apikey": KEY}, timeout=5).status_code == 404


def test_fetch_instances_lists_rows_for_the_global_key_or_an_instance_token():
    with FakeEvolution(api_key=KEY, instances={"shop": "shop-token", "loja2": None}) as fake:
        fake.set_state("loja2", "close", 401)
        rows = {row["name"]: row for row in get(fake, "/instance/fetchInstances").json()}
        assert set(rows) == {"shop", "loja2"}
        assert (rows["shop"]["connectionStatus"], rows["loja2"]["connectionStatus"]) == ("open", "close")
        assert rows["loja2"]["disconnectionReasonCode"] == 401 and rows["shop"]["integration"] == "WHATSAPP-BAILEYS"
        assert [row["name"] for row in get(fake, "/instance/fetchInstances", key="shop-token").json()] == ["shop"]
        assert get(fake, "/instance/fetchInstances", key="wrong").status_code == 401
        assert get(fake, "/instance/fetchInstances", key=None).status_code == 401
        assert [r["name"] for r in get(fake, "/instance/fetchInstances?instanceName=loja2").json()] == ["loja2"]
        assert get(fake, "/instance/fetchInstances?instanceName=nope").status_code == 404
        assert [r["route"] for r in fake.requests][:2] == ["fetchInstances", "fetchInstances"]


def test_webhook_find_is_null_until_set(evo):
    none = get(evo, "/webhook/find/shop")
    assert (none.status_code, none.text) == (200, "null")
    evo.set_webhook("shop", "http://webhook:8000/webhook?token=t", events=("MESSAGES_UPSERT", "CONNECTION_UPDATE"))
    row = get(evo, "/webhook/find/shop").json()
    assert (row["url"], row["enabled"], row["events"], row["webhookByEvents"]) == (
        "http://webhook:8000/webhook?token=t", True, ["MESSAGES_UPSERT", "CONNECTION_UPDATE"], False)
    assert row["instanceId"] == evo.instance_ids["shop"]
    assert get(evo, "/webhook/find/nope").status_code == 404
    assert get(evo, "/webhook/find/shop", key="wrong").status_code == 401
    evo.fail_next("findWebhook", 500)
    assert get(evo, "/webhook/find/shop").status_code == 500


# --- Gemini's cachedContents (explicit context caching) through the real SDK -------------------------

def make_cache(c, text="um dois três quatro cinco seis", ttl="60s", **config):
    return c.caches.create(model="gemini-2.5-flash", config=types.CreateCachedContentConfig(
        system_instruction=text, ttl=ttl, **config))


def test_gemini_cache_lifecycle_create_use_renew_delete(gem):
    gem.min_cache_tokens = 5
    c = client(gem)
    cache = make_cache(c)
    assert cache.name.startswith("cachedContents/") and cache.usage_metadata.total_token_count == 6
    assert 55 < cache.expire_time.timestamp() - time.time() <= 60
    created = gem.cache_calls[0]
    assert (created["method"], created["headers"]["x-goog-api-key"]) == ("POST", "g-key")
    assert created["body"]["model"] == "models/gemini-2.5-flash" and created["body"]["ttl"] == "60s"

    response = c.models.generate_content(model="gemini-2.5-flash", contents="oi tudo bem",
                                         config=types.GenerateContentConfig(cached_content=cache.name))
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.cached_content_token_count) == (9, 6)  # words: 6 cached + 3
    assert gem.requests[-1]["body"]["cachedContent"] == cache.name

    renewed = c.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(ttl="600s"))
    assert renewed.expire_time.timestamp() - time.time() > 590 and gem.cache_calls[-1]["method"] == "PATCH"
    c.caches.delete(name=cache.name)
    with pytest.raises(errors.ClientError) as gone:
        c.models.generate_content(model="gemini-2.5-flash", contents="oi",
                                  config=types.GenerateContentConfig(cached_content=cache.name))
    assert (gone.value.code, gone.value.status) == (403, "PERMISSION_DENIED")


def test_gemini_cache_refusals_match_the_real_api(gem):
    c = client(gem)
    with pytest.raises(errors.ClientError, match="Cached content is too small. total_token_count=1, "
                                                 "min_total_token_count=1024"):
        make_cache(c, "curto")
    gem.min_cache_tokens = 1
    cache = make_cache(c)
    with pytest.raises(errors.ClientError, match="CachedContent can not be used with GenerateContent request"):
        c.models.generate_content(model="gemini-2.5-flash", contents="oi", config=types.GenerateContentConfig(
            cached_content=cache.name, system_instruction="outra"))
    with pytest.raises(errors.ClientError, match="has to be the same"):
        c.models.generate_content(model="gemini-2.5-pro", contents="oi",
                                  config=types.GenerateContentConfig(cached_content=cache.name))
    gem.expire_caches()
    with pytest.raises(errors.ClientError, match="CachedContent not found"):
        c.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(ttl="60s"))
    with pytest.raises(errors.ClientError) as wrong_key:
        make_cache(client(gem, key="wrong"))
    assert wrong_key.value.code == 400
    gem.fail_cache_next(503)
    with pytest.raises(errors.ServerError):
        make_cache(c)
    assert len(gem.requests) == 2  # cachedContents calls are apart from generateContent's
