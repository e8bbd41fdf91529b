"""What the shop knows, on real processes: redis-server, `gunicorn webhook:app` (with the panel), `python worker.py`,
the real google-genai SDK against FakeGemini (which serves cachedContents and counts words as tokens).

The knowledge set in the panel reaches Gemini's very next request: inline below the cache minimum,
as a cache reference above it; a failing or vanished cache still answers; a handoff a person
answered yields one suggestion, approving it puts it in the next request, rejecting keeps it out.
"""

import re
import time

import pytest
import requests

import buffer
import chat_ids
import knowledge
import learn
from conftest import CUSTOMER, GEMINI_KEY, INSTANCE, PANEL_KEY, TOKEN, text_message, wait_until

PASSWORD = "senha-do-painel-teste"
CID = buffer.chat_ref(INSTANCE, f"{CUSTOMER}@s.whatsapp.net")
BAKERY = "## Pães\n- Pão francês: R$ 0,90 a unidade\n- Pão de queijo: R$ 4,50\n\n## Horário\n- Todos os dias das 6h às 20h"


def long_knowledge(chars=20_000):
    """A bakery's price list of about `chars` characters (about 3,000 words: past the fake's 1,024)."""
    lines, n = [], 0
    while sum(len(line) + 1 for line in lines) < chars:
        n += 1
        lines.append(f"- Produto {n}: bolo de fubá com goiabada número {n}, fatia R$ {n % 40 + 5},50, inteiro R$ {n % 90 + 30}")
    return "\n".join(lines)[:chars]


@pytest.fixture
def shop(start_stack, prompts):
    return start_stack(PANEL_PASSWORD=PASSWORD, SYSTEM_PROMPT_FILE=prompts / "system.md", HANDOFF_PAUSE_MINUTES=60)


class Panel:
    """The owner in the panel over HTTP, logged in, with the CSRF header on every call."""

    def __init__(self, stack):
        self.url = f"{stack.url}/panel"
        self.http = requests.Session()
        token = re.search(r'name="csrf_token" value="([^"]+)"', self.http.get(f"{self.url}/login").text).group(1)
        assert self.http.post(f"{self.url}/login", data={"password": PASSWORD, "csrf_token": token},
                              allow_redirects=False).status_code == 302
        self.http.headers["X-CSRF-Token"] = self.http.get(f"{self.url}/api/session").json()["csrf_token"]

    def call(self, method, path, body=None, expect=200):
        response = self.http.request(method, f"{self.url}{path}", json=body, timeout=20)
        assert response.status_code == expect, response.text
        return response.json()


def ask(stack, evolution, text, message_id, number=CUSTOMER):
    """A customer message, and the bot's reply to it (waited for)."""
    before = len(evolution.sent_texts())
    stack.post(text_message(text, message_id, number=number))
    wait_until(lambda: len(evolution.sent_texts()) > before, timeout=20, message=f"the reply to {text!r}")


def test_knowledge_set_in_the_panel_reaches_the_next_request_inline_below_the_cache_minimum(shop, gemini, evolution,
                                                                                            prompts):
    panel = Panel(shop)
    saved = panel.call("PUT", "/api/knowledge", {"name": "system", "text": BAKERY})
    assert saved["exists"] and saved["cached"] is False
    assert (prompts / "knowledge.md").read_text() == BAKERY + "\n"
    gemini.reply_with("O pão francês sai por R$ 0,90.")

    ask(shop, evolution, "quanto custa o pão francês?", "K1")
    persona = (prompts / "system.md").read_text().strip()
    system = gemini.system_text(-1)
    assert system == persona + knowledge.HEADING + BAKERY  # after the persona, before the conversation
    assert gemini.requests[-1]["body"]["contents"][-1]["parts"][-1]["text"] == "quanto custa o pão francês?"
    ask(shop, evolution, "e o pão de queijo?", "K2")
    assert gemini.system_text(-1) == system  # byte-for-byte the same between replies

    panel.call("PUT", "/api/knowledge", {"name": "system", "text": BAKERY + "\n- Sonho: R$ 6,00"})
    ask(shop, evolution, "tem sonho?", "K3")  # no restart: the very next reply reads it
    assert gemini.system_text(-1).endswith("- Sonho: R$ 6,00")
    assert gemini.cache_calls == []
    assert panel.call("GET", "/api/knowledge?name=system")["text"] == BAKERY + "\n- Sonho: R$ 6,00"


def test_a_long_knowledge_goes_as_a_cache_reference_shared_by_every_reply(shop, gemini, evolution, prompts):
    panel = Panel(shop)
    text = long_knowledge()
    assert panel.call("PUT", "/api/knowledge", {"name": "system", "text": text})["cached"] is True
    gemini.wait_for(lambda: gemini.cache_creations(), timeout=20)  # made by the panel, beside the request
    created = gemini.cache_creations()[0]
    cache = next(iter(gemini.caches.values()))
    assert created["systemInstruction"]["parts"][0]["text"].endswith(knowledge.HEADING + text)
    assert created["tools"][0]["functionDeclarations"][0]["name"] == "transfer_to_human"
    assert created["ttl"] == "3600s" and gemini.cache_calls[0]["headers"]["x-goog-api-key"] == GEMINI_KEY

    gemini.reply_with("Temos sim!")
    for i in range(2):
        ask(shop, evolution, f"tem bolo de fubá? {i}", f"C{i}", number=f"55119888800{i}{i}")
    for request in gemini.requests:
        body = request["body"]
        assert body["cachedContent"] == cache["name"]
        assert "systemInstruction" not in body and "tools" not in body
        assert sum(len(p.get("text", "")) for c in body["contents"] for p in c["parts"]) < 30  # the conversation alone
    assert len(gemini.cache_creations()) == 1  # one cache for every reply and process

    def prompt_tokens():  # counted once each reply is out
        metrics = requests.get(f"{shop.url}/metrics", params={"token": TOKEN}, timeout=5).text
        found = dict(re.findall(r'whatsapp_gemini_prompt_tokens_total\{cache="(\w+)"\} (\d+)', metrics))
        return int(found["cached"]) == 2 * cache["tokens"] and (int(found["cached"]), int(found["uncached"]))

    cached, uncached = wait_until(prompt_tokens, timeout=10, message="two replies' tokens in /metrics")
    assert 0 < uncached < 20  # the fake counts words: the conversation alone
    health = panel.http.get(f"{panel.url}/health").text
    assert f"<strong>{cached}</strong> lidos do cache" in health

    panel.call("PUT", "/api/knowledge", {"name": "system", "text": text + "\n- Sonho: R$ 6,00"})
    gemini.wait_for(lambda: len(gemini.cache_creations()) == 2, timeout=20)  # the edit gets a cache of its own
    wait_until(lambda: cache["name"] not in gemini.caches, timeout=10, message="the old cache deleted")
    ask(shop, evolution, "tem sonho?", "C9")
    assert gemini.requests[-1]["body"]["cachedContent"] in gemini.caches


def test_a_failing_cache_creation_still_answers_inline(shop, gemini, evolution):
    gemini.fail_cache_next(503, times=10)
    panel = Panel(shop)
    text = long_knowledge()
    panel.call("PUT", "/api/knowledge", {"name": "system", "text": text})
    wait_until(lambda: gemini.cache_calls, timeout=20, message="the panel's attempt to make the cache")
    gemini.reply_with("Temos sim!")
    ask(shop, evolution, "tem bolo de fubá?", "F1")
    body = gemini.requests[-1]["body"]
    assert "cachedContent" not in body and gemini.system_text(-1).endswith(text)
    assert gemini.caches == {} and evolution.sent_texts()[-1][2] == "Temos sim!"


def test_a_cache_gemini_no_longer_knows_costs_one_more_call_never_the_reply(shop, gemini, evolution):
    panel = Panel(shop)
    text = long_knowledge()
    panel.call("PUT", "/api/knowledge", {"name": "system", "text": text})
    gemini.wait_for(lambda: gemini.cache_creations(), timeout=20)
    gemini.expire_caches()  # gone at Google before its time (deleted, or the clocks disagree)
    gemini.reply_with("Temos sim!")
    ask(shop, evolution, "tem bolo de fubá?", "E1")
    refused, inline = gemini.requests[-2:]
    assert refused["status"] == 403 and refused["body"]["cachedContent"]
    assert inline["status"] == 200 and gemini.system_text(-1).endswith(text)
    assert evolution.sent_texts()[-1][2] == "Temos sim!"
    gemini.wait_for(lambda: len(gemini.cache_creations()) == 2, timeout=20)  # and a new one is made beside it


QUESTION = "Vocês fazem bolo de aniversário sob encomenda?"
ANSWER = "Sim, com 3 dias de antecedência, a partir de R$ 80."


def verdicts(gemini):
    """The requests that asked Gemini to judge a person's answer (structured output)."""
    return [r for r in gemini.requests if "responseSchema" in (r["body"].get("generationConfig") or {})]


def hand_over_and_answer(shop, gemini, evolution):
    """A customer (Marina Souza) asks what the knowledge lacks; Gemini hands the chat over; the owner answers
    from the phone, naming her and giving a phone number."""

    def respond(body):
        if "responseSchema" in (body.get("generationConfig") or {}):
            return f'{{"reusable": true, "question": "{QUESTION}", "answer": "{ANSWER}"}}'
        if "aniversário" in body["contents"][-1]["parts"][-1]["text"]:
            return {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {
                "name": "transfer_to_human", "args": {"reason": "encomenda sem preço no conhecimento"}}}]},
                "finishReason": "STOP", "index": 0}]}
        return "Temos sim!"

    gemini.responder = respond
    message = text_message("vocês fazem bolo de aniversário? é pra sábado", "H1")
    message["data"]["pushName"] = "Marina Souza"
    shop.post(message)
    wait_until(lambda: evolution.sent_texts(), timeout=20, message="the handoff message")
    owner = "Oi Marina! Fazemos sim, com 3 dias de antecedência, a partir de R$ 80. Qualquer coisa, 11 98888-7777."
    assert shop.post(text_message(owner, "H2", from_me=True))["results"] == ["paused"]
    wait_until(lambda: verdicts(gemini), timeout=20, message="Gemini asked about the person's answer")


def test_a_handoff_answered_by_a_person_yields_one_suggestion_and_approving_it_reaches_the_next_request(
        shop, gemini, evolution, prompts):
    panel = Panel(shop)
    panel.call("PUT", "/api/knowledge", {"name": "system", "text": BAKERY})
    hand_over_and_answer(shop, gemini, evolution)
    suggestions = wait_until(lambda: panel.call("GET", "/api/suggestions"), timeout=20, message="the suggestion")
    assert [(s["question"], s["answer"], s["chat_id"]) for s in suggestions] == [
        (QUESTION, ANSWER, chat_ids.public(PANEL_KEY.encode(), CID))]  # the keyed id, as the panel's URLs
    assert set(suggestions[0]) == {"id", "question", "answer", "chat_id", "at", "instance"}

    asked = str(verdicts(gemini)[0]["body"]["contents"])
    assert "bolo de aniversário" in asked and "a partir de R$ 80" in asked
    assert "Marina" not in asked and "Souza" not in asked and CUSTOMER not in asked and "98888" not in asked
    assert verdicts(gemini)[0]["body"]["generationConfig"]["responseMimeType"] == "application/json"

    shop.post(text_message("Ah, e também fazemos bolo de pote.", "H3", from_me=True))  # a second answer
    time.sleep(2)
    assert len(verdicts(gemini)) == 1 and len(panel.call("GET", "/api/suggestions")) == 1  # asked once

    edited = "Sim, sob encomenda com 3 dias de antecedência, a partir de R$ 80 (1 kg)."
    approved = panel.call("POST", f"/api/suggestions/{suggestions[0]['id']}/approve", {"answer": edited})
    assert approved["result"] == "approved" and approved["knowledge"] == "system"
    assert panel.call("GET", "/api/suggestions") == []
    line = learn.qa_line(QUESTION, edited)
    assert (prompts / "knowledge.md").read_text() == f"{BAKERY}\n{line}\n"
    panel.call("POST", f"/api/suggestions/{suggestions[0]['id']}/approve", expect=404)  # only once

    ask(shop, evolution, "bom dia, fazem bolo de aniversário?!", "H4", number="5511977776666")
    assert gemini.system_text(-1).endswith(BAKERY + "\n" + line)


def test_rejecting_a_suggestion_keeps_it_out(shop, gemini, evolution, prompts):
    panel = Panel(shop)
    panel.call("PUT", "/api/knowledge", {"name": "system", "text": BAKERY})
    hand_over_and_answer(shop, gemini, evolution)
    suggestion = wait_until(lambda: panel.call("GET", "/api/suggestions"), timeout=20, message="the suggestion")[0]
    assert panel.call("POST", f"/api/suggestions/{suggestion['id']}/reject")["result"] == "rejected"
    assert panel.call("GET", "/api/suggestions") == []
    assert (prompts / "knowledge.md").read_text() == BAKERY + "\n"
    ask(shop, evolution, "fazem bolo de aniversário?", "R4", number="5511977776666")
    assert ANSWER not in gemini.system_text(-1) and "a partir de R$ 80" not in gemini.system_text(-1)
    assert shop.redis.client().sismember(learn.REJECTED, learn.fingerprint(QUESTION))

