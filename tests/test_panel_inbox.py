"""The panel as the owner's daily tool (issue 21): "Precisa de você", the inbox at any size, cheap refresh,
media, quick replies, suggestions, honest errors, the manifest.

fakeredis and Flask's test client, the fakes of tests/fakes.py at the network edge; the 20,000-chat inbox
runs on a real redis-server.
"""

import gzip
import json
import struct
import time
import zlib

import pytest

import attention
import buffer
import chat_ids
import parser
import webhook
import worker
from panel import search
from conftest import INSTANCE, PANEL_KEY, TOKEN, seed_chats, text_message
from test_panel import CID, PID, app, client, deliver, owner, post, settings  # noqa: F401 (fixtures)
from test_promise import transfer_call


def public(cid):
    """The chat's id in the panel's URLs and API (chat_ids.py), never its Redis ref."""
    return chat_ids.public(PANEL_KEY.encode(), cid)


def chat(owner, cid=CID):
    return owner.get(f"/panel/api/chats/{public(cid)}").get_json()


def listed(owner, **query):
    response = owner.get("/panel/api/chats", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def answer(settings, fake_redis, cid=CID):
    worker.process_chat(worker.make_context(settings, fake_redis), cid)


def echo(owner, text, message_id, event="messages.upsert"):
    body = text_message(text, message_id, from_me=True)
    body["event"] = event
    return owner.post(f"/webhook?token={TOKEN}", json=body).get_json()["results"][0]


# --- "Precisa de você" ------------------------------------------------------------------------------------------

def test_asking_for_a_person_pins_the_chat_until_the_panel_answers(owner, settings, fake_redis, gemini, evolution):
    deliver(owner, "quero falar com uma pessoa", "NP1")
    answer(settings, fake_redis)
    asked = chat(owner)
    assert asked["state"] == "needs_person" and asked["needs_person_reason"] == "pediu uma pessoa"
    assert asked["bot_state"] == "paused" and time.time() - 10 < asked["needs_person_since"] <= time.time()
    assert gemini.requests == []  # the phrase alone hands over

    deliver(owner, "oi, tem bolo?", "NP2", number="5511988887777")  # a newer chat still comes after it
    page = listed(owner)
    assert [c["state"] for c in page["chats"]] == ["needs_person", "waiting"] and page["needs_person"] == 1
    assert "precisa de você" in owner.get("/panel/part/inbox").get_data(as_text=True)

    deliver(owner, "alguém?", "NP3")  # writing meanwhile keeps the first reason and time
    assert chat(owner)["needs_person_reason"] == "pediu uma pessoa"
    assert chat(owner)["needs_person_since"] == asked["needs_person_since"]

    assert post(owner, f"/panel/api/chats/{PID}/pause").status_code == 200  # taking over is no answer yet
    assert chat(owner)["state"] == "needs_person"
    assert post(owner, f"/panel/api/chats/{PID}/reply", {"text": "Oi! Sou a Ana."}).status_code == 200
    answered = chat(owner)
    assert answered["state"] == "paused" and answered["needs_person_since"] is None
    assert listed(owner)["needs_person"] == 0 and listed(owner, state="needs_person")["chats"] == []


def test_gemini_handing_over_pins_the_chat_until_the_phone_answers(owner, settings, fake_redis, gemini, evolution):
    gemini.responder = lambda request: transfer_call("cliente quer negociar desconto")
    deliver(owner, "faz um desconto?", "GT1")
    answer(settings, fake_redis)
    assert chat(owner)["state"] == "needs_person" and chat(owner)["needs_person_reason"] == "pediu uma pessoa"

    fake_redis.delete(buffer.keys(CID)["paused"])  # the pause ran out: the customer is still waiting
    assert chat(owner)["state"] == "needs_person" and chat(owner)["bot_state"] == "idle"

    assert echo(owner, "Oi, aqui é a loja! Faço 10%.", "GT2") == "paused"  # the owner answers from the phone
    assert chat(owner)["state"] == "paused" and chat(owner)["needs_person_since"] is None


def test_opting_out_pins_the_chat_until_it_is_handed_back(owner, settings, fake_redis, gemini, evolution):
    deliver(owner, "sair", "OO1")
    answer(settings, fake_redis)
    assert chat(owner)["needs_person_reason"] == "pediu para sair" and chat(owner)["bot_state"] == "stopped"
    assert post(owner, f"/panel/api/chats/{PID}/resume").get_json()["state"] == "idle"
    assert chat(owner)["state"] == "idle" and chat(owner)["needs_person_since"] is None


def test_writing_while_a_person_holds_the_chat_pins_it_until_chatwoot_or_hash_bot(owner, fake_redis):
    deliver(owner, "oi", "WP1")
    post(owner, f"/panel/api/chats/{PID}/pause")
    assert chat(owner)["state"] == "paused"  # held, but nobody waiting yet
    assert deliver(owner, "ainda estão aí?", "WP2") == "paused"
    assert chat(owner)["needs_person_reason"] == "escreveu enquanto pausado"
    assert echo(owner, "Oi, aqui é a Júlia, da loja", "3EB0000000000000000099", "send.message") == "paused"  # Chatwoot
    assert chat(owner)["state"] == "paused"

    post(owner, f"/panel/api/chats/{PID}/stop")
    assert deliver(owner, "e agora?", "WP3") == "paused"  # stopped: still someone to answer
    assert chat(owner)["state"] == "needs_person" and chat(owner)["bot_state"] == "stopped"
    assert echo(owner, "#bot", "WP4") == "resumed"  # handed back from the phone
    assert chat(owner)["state"] == "idle"

    post(owner, f"/panel/api/chats/{PID}/pause")
    deliver(owner, "olá?", "WP5")
    assert fake_redis.zscore(attention.NEEDS, CID) is not None
    assert post(owner, f"/panel/api/chats/{PID}/forget").status_code == 200  # erasing leaves nothing behind
    assert fake_redis.zscore(attention.NEEDS, CID) is None and not fake_redis.hexists(attention.WHY, CID)


# --- the inbox at any size (real Redis) ---------------------------------------------------------------------------

@pytest.fixture
def big_inbox(redis_server, settings):
    """20,000 chats written as the webhook writes them, on a real redis-server; every 100th paused by a person."""
    redis = redis_server.client()
    cids = seed_chats(redis, settings, 20_000, name=lambda i: "João Ninguém" if i == 12_345 else f"Cliente {i}",
                      text=lambda i: "quero um bolo de cenoura" if i % 1000 == 0 else f"oi {i}", instance="loja")
    pipe = redis.pipeline(transaction=False)
    for cid in cids[::100]:
        pipe.set(buffer.keys(cid)["paused"], "human", ex=3600)
    pipe.execute()
    attention.flag(redis, cids[5], attention.ASKED)  # an old chat that needs a person
    return webhook.create_app(settings, redis).test_client(), cids, redis


def test_search_filter_and_cursor_at_20000_chats(big_inbox):
    from test_panel import login

    client, cids, _ = big_inbox
    assert login(client).status_code == 302

    first = client.get("/panel/api/chats").get_json()
    assert first["total"] == 20_000 and len(first["chats"]) == 50 and first["needs_person"] == 1
    assert first["chats"][0]["id"] == public(cids[5]) and first["chats"][0]["state"] == "needs_person"  # pinned
    assert [c["id"] for c in first["chats"][1:]] == [public(cid) for cid in cids[::-1][:49]]  # then newest first

    seen, cursor = [c["id"] for c in first["chats"]], first["next"]
    while cursor:
        page = client.get("/panel/api/chats", query_string={"cursor": cursor, "limit": 200}).get_json()
        seen += [c["id"] for c in page["chats"]]
        cursor = page["next"]
    assert len(seen) == len(set(seen)) == 20_000

    def ids(**query):
        return [c["id"] for c in client.get("/panel/api/chats", query_string=query).get_json()["chats"]]

    assert ids(q="joao ninguem") == ids(q="JOÃO") == [public(cids[12_345])]  # the name, whatever the accents and case
    assert ids(q="(11) 9 0001-2345") == [public(cids[12_345])]  # the number's digits, however written
    found = client.get("/panel/api/chats", query_string={"q": "cenoura"}).get_json()
    assert found["total"] == 20 and found["next"] is None
    assert ids(q="cenoura", limit=5) == [public(cids[i]) for i in range(19_000, 14_000, -1000)]
    paused = client.get("/panel/api/chats", query_string={"state": "paused", "limit": 200}).get_json()
    assert paused["total"] == 200 and {c["state"] for c in paused["chats"]} == {"paused"}
    assert ids(state="needs_person") == [public(cids[5])]
    assert ids(state="paused", q="cenoura") == [public(cids[i]) for i in range(19_000, -1, -1000)]

    for bad in ({"state": "zzz"}, {"cursor": "nada"}, {"limit": "x"}):
        response = client.get("/panel/api/chats", query_string=bad)
        assert response.status_code == 400 and response.get_json()["error"][0].isupper(), bad


def test_the_search_forgets_an_erased_chat(owner, fake_redis):
    deliver(owner, "meu nome é segredo", "SE1")
    assert [c["id"] for c in listed(owner, q="segredo")["chats"]] == [PID]
    assert fake_redis.hexists(attention.SEARCH, CID)
    post(owner, f"/panel/api/chats/{PID}/forget")
    assert not fake_redis.hexists(attention.SEARCH, CID) and listed(owner, q="segredo")["total"] == 0

    deliver(owner, "outro segredo", "SE2", number="5511988887777")
    other = buffer.chat_ref(INSTANCE, "5511988887777@s.whatsapp.net")
    assert listed(owner, q="segredo")["total"] == 1 and fake_redis.hexists(attention.SEARCH, other)
    fake_redis.zrem(search.CHATS, other)  # its log expired: the index lets it go, and so does the search
    assert listed(owner, q="segredo")["total"] == 0 and not fake_redis.hexists(attention.SEARCH, other)


# --- cheap refresh ------------------------------------------------------------------------------------------------

def test_list_and_thread_answer_304_while_nothing_changes(owner):
    deliver(owner, "oi", "ET1")
    for url in ("/panel/api/chats", "/panel/part/inbox", f"/panel/api/chats/{PID}", f"/panel/part/chats/{PID}"):
        first = owner.get(url)
        etag = first.headers["ETag"]
        again = owner.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.get_data() == b"", url
    before = {url: owner.get(url).headers["ETag"] for url in ("/panel/api/chats", f"/panel/part/chats/{PID}")}
    deliver(owner, "mais uma coisa", "ET2")
    for url, etag in before.items():
        changed = owner.get(url, headers={"If-None-Match": etag})
        assert changed.status_code == 200 and "mais uma coisa" in changed.get_data(as_text=True), url


def test_long_answers_are_gzipped_for_browsers_that_take_it(owner):
    for i in range(30):
        deliver(owner, f"mensagem número {i} com algum texto para encher a conversa", f"GZ{i}")
    plain = owner.get(f"/panel/api/chats/{PID}")
    assert "Content-Encoding" not in plain.headers and len(plain.get_data()) > 1024
    packed = owner.get(f"/panel/api/chats/{PID}", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert packed.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed.headers["Vary"]
    assert len(packed.get_data()) < len(plain.get_data()) / 3
    assert json.loads(gzip.decompress(packed.get_data())) == plain.get_json()


# --- the conversation ---------------------------------------------------------------------------------------------

def test_media_is_fetched_through_the_panel_on_demand(owner, evolution):
    body = text_message("", "AU1")
    body["data"]["message"] = {"audioMessage": {"mimetype": "audio/ogg; codecs=opus", "seconds": 4, "ptt": True}}
    body["data"]["messageType"] = "audioMessage"
    owner.post(f"/webhook?token={TOKEN}", json=body)
    part = owner.get(f"/panel/part/chats/{PID}").get_data(as_text=True)
    assert f'<audio controls preload="none" src="/panel/media/{PID}/AU1"' in part

    voice = b"OggS\x00\x02" + bytes(200)
    evolution.add_media("AU1", "audio/ogg; codecs=opus", voice)
    got = owner.get(f"/panel/media/{PID}/AU1")
    assert got.status_code == 200 and got.get_data() == voice and got.headers["Content-Type"] == "audio/ogg"
    assert got.headers["X-Content-Type-Options"] == "nosniff"

    evolution.add_media("DOC1", "text/html", b"<script>alert(1)</script>", "documentMessage")
    page = owner.get(f"/panel/media/{PID}/DOC1")  # never shown inline: a download
    assert page.headers["Content-Type"] == "application/octet-stream"
    assert page.headers["Content-Disposition"] == "attachment"

    evolution.fail_next("getBase64FromMediaMessage", 500)
    failed = owner.get(f"/panel/media/{PID}/AU1")
    assert failed.status_code == 502 and failed.get_json()["error"].startswith("Não foi possível baixar")
    assert owner.get("/panel/media/0123456789abcdef0123/AU1").status_code == 404
    owner.post("/panel/logout", data={"csrf_token": owner.csrf})
    logged_out = owner.get(f"/panel/media/{PID}/AU1")
    assert logged_out.status_code == 302 and logged_out.headers["Location"].startswith("/panel/login")


def test_quick_replies_are_saved_checked_and_need_the_csrf_token(owner):
    assert owner.get("/panel/api/quick-replies").get_json() == []
    items = [{"shortcut": "/Pix", "text": " Nossa chave Pix é o CNPJ. "}, {"shortcut": "horario", "text": "Das 9h às 18h."}]
    assert owner.put("/panel/api/quick-replies", json=items).status_code == 403
    saved = owner.put("/panel/api/quick-replies", json=items, headers={"X-CSRF-Token": owner.csrf})
    assert saved.status_code == 200
    assert owner.get("/panel/api/quick-replies").get_json() == [
        {"shortcut": "pix", "text": "Nossa chave Pix é o CNPJ."}, {"shortcut": "horario", "text": "Das 9h às 18h."}]
    for bad in ({"shortcut": "pix"}, [{"shortcut": "com espaço", "text": "x"}], [{"shortcut": "a", "text": ""}],
                [{"shortcut": "a", "text": "x"}, {"shortcut": "A", "text": "y"}], [{"shortcut": "a", "text": "x"}] * 101):
        response = owner.put("/panel/api/quick-replies", json=bad, headers={"X-CSRF-Token": owner.csrf})
        assert response.status_code == 400 and response.get_json()["error"][0].isupper(), bad
    malformed = owner.put("/panel/api/quick-replies", data="[{", content_type="application/json",
                          headers={"X-CSRF-Token": owner.csrf})
    assert malformed.status_code == 400
    assert len(owner.get("/panel/api/quick-replies").get_json()) == 2


def test_suggest_drafts_from_history_and_persona_sends_nothing_and_counts_in_the_budget(
        owner, make_settings, prompts, fake_redis, gemini, evolution):
    settings = make_settings(PANEL_PASSWORD="senha-do-painel-teste", SYSTEM_PROMPT_FILE=prompts / "system.md",
                             DEBOUNCE_SECONDS=0, GEMINI_MAX_CALLS_PER_HOUR=2)
    client = webhook.create_app(settings, fake_redis).test_client()
    from test_panel import login

    login(client)
    client.csrf = client.get("/panel/api/session").get_json()["csrf_token"]
    gemini.reply_with("Temos sim! O de cenoura sai por R$ 30.")
    deliver(client, "vocês têm bolo de cenoura?", "SG1")
    answer(settings, fake_redis)
    sent = len(evolution.sent_texts())

    draft = post(client, f"/panel/api/chats/{PID}/suggest")
    assert draft.status_code == 200 and draft.get_json() == {"text": "Temos sim! O de cenoura sai por R$ 30."}
    assert len(evolution.sent_texts()) == sent  # nothing sent
    request = gemini.requests[-1]["body"]
    everything = json.dumps(request["contents"], ensure_ascii=False)
    assert "vocês têm bolo de cenoura?" in everything and "Temos sim!" in everything  # the chat's history
    persona = (prompts / "system.md").read_text(encoding="utf-8").strip().splitlines()[0]
    assert persona in json.dumps(request["systemInstruction"], ensure_ascii=False)  # the persona

    over = post(client, f"/panel/api/chats/{PID}/suggest")  # the reply and the draft used the hour's 2 calls
    assert over.status_code == 429 and "GEMINI_MAX_CALLS_PER_HOUR" in over.get_json()["error"]
    assert len(gemini.requests) == 2


def test_a_send_that_timed_out_is_shown_as_uncertain_until_its_echo(owner, make_settings, prompts, fake_redis,
                                                                     evolution):
    settings = make_settings(PANEL_PASSWORD="senha-do-painel-teste", SYSTEM_PROMPT_FILE=prompts / "system.md",
                             EVOLUTION_TIMEOUT_SECONDS=5, MAX_TYPING_MS=0)
    client = webhook.create_app(settings, fake_redis).test_client()
    from test_panel import login

    login(client)
    client.csrf = client.get("/panel/api/session").get_json()["csrf_token"]
    deliver(client, "oi", "UN1")
    evolution.delay_next("sendText", 5.5)
    response = post(client, f"/panel/api/chats/{PID}/reply", {"text": "Já te respondo"})
    assert response.status_code == 504 and response.get_json()["uncertain"] is True
    assert "pode ter saído — confira no celular antes de reenviar" in response.get_json()["error"]
    shown = client.get(f"/panel/api/chats/{PID}").get_json()["messages"][-1]
    assert shown["text"] == "Já te respondo" and shown["uncertain"] is True
    assert "envio incerto" in client.get(f"/panel/part/chats/{PID}").get_data(as_text=True)

    assert echo(client, "Já te respondo", "UN2") == "paused"  # WhatsApp's echo: it did go out
    messages = client.get(f"/panel/api/chats/{PID}").get_json()["messages"]
    assert [(m["from"], m["text"], m.get("uncertain")) for m in messages] == [
        ("customer", "oi", None), ("human", "Já te respondo", None)]


def test_same_second_messages_keep_their_arrival_order_even_when_late(owner, settings, fake_redis):
    at = int(time.time()) - 30
    for i in range(10):  # all stamped the same second, arriving 1.2 s apart from 2 s late on
        message, = parser.parse_body(text_message(f"m{i}", f"SS{i}", timestamp=at))
        buffer.add_message(fake_redis, message, settings, now=at + 2 + i * 1.2)
    deliver(owner, "antes", "SS-EARLIER", timestamp=at - 5)  # an older message delivered last goes before them
    assert [m["text"] for m in chat(owner)["messages"]] == ["antes"] + [f"m{i}" for i in range(10)]


# --- installable --------------------------------------------------------------------------------------------------

def test_the_manifest_and_icons_need_no_login(client):
    response = client.get("/panel/manifest.webmanifest")
    assert response.status_code == 200 and response.mimetype == "application/manifest+json"
    manifest = response.get_json(force=True)
    assert manifest["start_url"] == "/panel/" and manifest["display"] == "standalone"
    assert manifest["name"] and manifest["short_name"]
    for icon, size in zip(manifest["icons"], (192, 512)):
        assert icon["sizes"] == f"{size}x{size}" and icon["type"] == "image/png"
        png = client.get(icon["src"]).get_data()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height, depth, color = struct.unpack(">IIBB", png[16:26])
        assert (width, height, depth, color) == (size, size, 8, 2)
        idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
        assert len(zlib.decompress(idat)) == size * (1 + 3 * size)
    assert client.get("/panel/icon-64.png").status_code == 404
    page = client.get("/panel/login").get_data(as_text=True)
    assert 'rel="manifest" href="/panel/manifest.webmanifest"' in page
