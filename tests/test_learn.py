"""learn.py on fakeredis and FakeGemini (structured output through the real SDK), and the knowledge panel's API on
Flask's test client: once per handoff, never the customer's name or number, only with the owner's approval."""

import json
import re

import pytest

import ai_service
import buffer
import chat_ids
import knowledge
import learn
import webhook
from conftest import CUSTOMER, INSTANCE, PANEL_KEY

CID = buffer.chat_ref(INSTANCE, f"{CUSTOMER}@s.whatsapp.net")
PASSWORD = "senha-do-painel-teste"
REPLY = {"instance": INSTANCE, "reply_to": CUSTOMER, "name": "Marina Souza",
         "user_text": "vocês fazem bolo de aniversário? meu número é 11 97777-1234"}


@pytest.fixture
def settings(make_settings, prompts):
    return make_settings(SYSTEM_PROMPT_FILE=prompts / "system.md", PANEL_PASSWORD=PASSWORD)


@pytest.fixture
def client(settings):
    return ai_service.make_client(settings)


def verdict(gemini, question="Vocês fazem bolo de aniversário?", answer="Sim, a partir de R$ 80.", reusable=True):
    gemini.reply_with(json.dumps({"reusable": reusable, "question": question, "answer": answer}))


def handed_over_and_answered(redis, queue, settings, answer="Oi Marina! Fazemos sim, a partir de R$ 80."):
    learn.note_handoff(redis, CID, REPLY, settings)
    return learn.person_answered(redis, queue, CID, answer, settings)


def test_scrub_takes_out_the_name_phone_numbers_and_e_mails_but_not_prices():
    text = "Oi Marina Souza! Custa R$ 80,00 (2 kg). Liga no +55 (11) 97777-1234 ou marina@example.com, marina."
    assert learn.scrub(text, "Marina Souza", CUSTOMER) == (
        "Oi [cliente] [cliente]! Custa R$ 80,00 (2 kg). Liga no [telefone] ou [e-mail], [cliente].")


def test_only_the_first_answer_after_a_handoff_is_studied(fake_redis, queue, settings):
    assert learn.person_answered(fake_redis, queue, CID, "Oi!", settings) is False  # no handoff: nothing to learn
    assert handed_over_and_answered(fake_redis, queue, settings) is True
    assert learn.person_answered(fake_redis, queue, CID, "Mais uma coisa", settings) is False
    assert [job.func_name for job in queue.jobs] == ["learn.study"] and queue.jobs[0].args == (CID,)
    assert CUSTOMER not in json.dumps(queue.jobs[0].args)  # the job carries the chat's id, not the number


def test_gemini_reads_the_exchange_without_the_customer_and_the_owner_gets_one_suggestion(
        fake_redis, queue, settings, client, gemini):
    handed_over_and_answered(fake_redis, queue, settings)
    verdict(gemini)
    item = learn.learn(fake_redis, client, settings, CID)
    asked = gemini.requests[-1]["body"]
    transcript = asked["contents"][0]["parts"][0]["text"]
    assert "Cliente: vocês fazem bolo de aniversário?" in transcript and "Pessoa da loja: Oi [cliente]!" in transcript
    assert not re.search(r"Marina|Souza|97777|1234", transcript)
    assert asked["generationConfig"]["responseSchema"]["required"] == ["reusable", "question", "answer"]
    assert learn.suggestions(fake_redis) == [item]
    assert (item["question"], item["answer"], item["chat_id"]) == ("Vocês fazem bolo de aniversário?",
                                                                   "Sim, a partir de R$ 80.", CID)
    assert learn.learn(fake_redis, client, settings, CID) is None and len(gemini.requests) == 1  # asked once


@pytest.mark.parametrize("answer", ["Sim, Marina, a partir de R$ 80.", "Sim; ligue 11 97777-1234."])
def test_a_suggestion_naming_the_customer_is_dropped(fake_redis, queue, settings, client, gemini, answer):
    handed_over_and_answered(fake_redis, queue, settings)
    verdict(gemini, answer=answer)
    assert learn.learn(fake_redis, client, settings, CID) is None and learn.suggestions(fake_redis) == []


def test_nothing_reusable_makes_no_suggestion(fake_redis, queue, settings, client, gemini):
    handed_over_and_answered(fake_redis, queue, settings, "Já vou verificar seu pedido!")
    verdict(gemini, "", "", reusable=False)
    assert learn.learn(fake_redis, client, settings, CID) is None and learn.suggestions(fake_redis) == []


def test_a_failing_gemini_is_retried_by_rq_with_the_exchange_kept(fake_redis, queue, settings, client, gemini):
    handed_over_and_answered(fake_redis, queue, settings)
    gemini.fail_next(503)
    with pytest.raises(ai_service.ReplyError):
        learn.learn(fake_redis, client, settings, CID)
    verdict(gemini)
    assert learn.learn(fake_redis, client, settings, CID)["answer"] == "Sim, a partir de R$ 80."


def test_the_gemini_budget_counts_the_question(make_settings, prompts, fake_redis, queue, client, gemini):
    settings = make_settings(SYSTEM_PROMPT_FILE=prompts / "system.md", GEMINI_MAX_CALLS_PER_HOUR=1)
    handed_over_and_answered(fake_redis, queue, settings)
    verdict(gemini)
    assert learn.learn(fake_redis, client, settings, CID) is not None
    handed_over_and_answered(fake_redis, queue, settings)
    assert learn.learn(fake_redis, client, settings, CID) is None and len(gemini.requests) == 1


def test_a_rejected_question_is_not_suggested_again_however_written(fake_redis, settings):
    item = learn.suggest(fake_redis, settings, INSTANCE, CID, "Vocês entregam no domingo?", "Não.")
    assert learn.reject(fake_redis, item["id"])["id"] == item["id"]
    assert learn.suggest(fake_redis, settings, INSTANCE, CID, "vocês   ENTREGAM no domingo", "Sim.") is None
    assert learn.suggestions(fake_redis) == [] and knowledge.read(settings) == ""


def test_approving_appends_to_the_knowledge_the_number_reads(fake_redis, settings, prompts):
    knowledge.write(settings, "system", "- Pão francês: R$ 0,90")
    knowledge.write(settings, "loja2", "- Só encomendas")
    shop = learn.suggest(fake_redis, settings, INSTANCE, CID, "Tem bolo de pote?", "Sim, R$ 12.")
    other = learn.suggest(fake_redis, settings, "loja2", CID, "Entregam?", "Não.")
    assert learn.approve(fake_redis, settings, shop["id"])["knowledge"] == "system"
    assert learn.approve(fake_redis, settings, other["id"], "Só retirada na loja.")["knowledge"] == "loja2"
    assert (prompts / "knowledge.md").read_text() == "- Pão francês: R$ 0,90\n- Pergunta: Tem bolo de pote? — Resposta: Sim, R$ 12.\n"
    assert knowledge.read(settings, "loja2").endswith("- Pergunta: Entregam? — Resposta: Só retirada na loja.")
    assert learn.approve(fake_redis, settings, shop["id"]) is None  # once
    assert learn.suggest(fake_redis, settings, INSTANCE, CID, "Tem bolo de pote?", "Sim, R$ 12.") is None  # known


def test_the_system_instruction_is_the_persona_then_the_knowledge(settings, prompts):
    persona = (prompts / "system.md").read_text().strip()
    assert knowledge.system_instruction(settings, INSTANCE) == persona  # no knowledge: the persona alone
    knowledge.write(settings, "system", "  - Pão: R$ 1  \n\n")
    assert knowledge.system_instruction(settings, INSTANCE) == persona + knowledge.HEADING + "- Pão: R$ 1"
    knowledge.write(settings, INSTANCE, "- Só bolos")
    assert knowledge.system_instruction(settings, INSTANCE).endswith(knowledge.HEADING + "- Só bolos")
    assert knowledge.system_instruction(settings, "loja2").endswith(knowledge.HEADING + "- Pão: R$ 1")
    knowledge.write(settings, INSTANCE, "")  # empty: the number reads the shared one again
    assert not (prompts / f"{INSTANCE}.knowledge.md").exists()


# --- the panel's API -------------------------------------------------------------------------

@pytest.fixture
def owner(settings, fake_redis):
    app = webhook.create_app(settings, fake_redis)
    http = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/panel/login").get_data(as_text=True)).group(1)
    assert http.post("/panel/login", data={"password": PASSWORD, "csrf_token": token}).status_code == 302
    http.csrf = {"X-CSRF-Token": http.get("/panel/api/session").get_json()["csrf_token"]}
    return http


def test_the_knowledge_api_refuses_bad_input_with_400(owner):
    assert owner.put("/panel/api/knowledge", data="{not json", headers={**owner.csrf, "Content-Type": "application/json"}
                     ).status_code == 400
    assert owner.put("/panel/api/knowledge", json={"name": "../x", "text": "a"}, headers=owner.csrf).status_code == 400
    assert owner.put("/panel/api/knowledge", json={"name": "system", "text": 5}, headers=owner.csrf).status_code == 400
    assert owner.put("/panel/api/knowledge", json={"text": "x" * (knowledge.MAX_CHARS + 1)},
                     headers=owner.csrf).status_code == 400
    assert owner.get("/panel/api/knowledge?name=a.b").status_code == 400
    assert owner.put("/panel/api/knowledge", json={"text": "a"}).status_code == 403  # no CSRF token


def test_the_knowledge_api_reads_and_writes_the_files(owner, prompts):
    assert owner.get("/panel/api/knowledge").get_json() == {"name": "system", "text": "", "exists": False, "chars": 0,
                                                           "cached": False}
    saved = owner.put("/panel/api/knowledge", json={"name": "loja2", "text": "- Bolo: R$ 45"}, headers=owner.csrf)
    assert saved.get_json()["exists"] and (prompts / "loja2.knowledge.md").read_text() == "- Bolo: R$ 45\n"
    assert owner.get("/panel/api/knowledge?name=loja2").get_json()["text"] == "- Bolo: R$ 45"
    assert "knowledge" not in owner.get("/panel/persona").get_data(as_text=True).split("persona-name", 1)[1]
    page = owner.get("/panel/conhecimento").get_data(as_text=True)
    assert 'id="knowledge-form"' in page and "<script>" not in page and "style=" not in page


def test_the_suggestions_api(owner, fake_redis, settings, prompts):
    item = learn.suggest(fake_redis, settings, INSTANCE, CID, "Tem bolo de pote?", "Sim, R$ 12.")
    pid = chat_ids.public(PANEL_KEY.encode(), CID)  # the chat by its keyed id, never the Redis ref
    assert owner.get("/panel/api/suggestions").get_json() == [{**item, "chat_id": pid}]
    page = owner.get("/panel/aprendeu").get_data(as_text=True)
    assert "Tem bolo de pote?" in page and f"/panel/chats/{pid}" in page and CID not in page
    assert owner.post(f"/panel/api/suggestions/{item['id']}/approve", json={"answer": ""},
                      headers=owner.csrf).status_code == 400
    assert owner.post("/panel/api/suggestions/nope/reject", headers=owner.csrf).status_code == 404
    assert owner.post(f"/panel/api/suggestions/{item['id']}/approve", json={"answer": "Sim, R$ 13."},
                      headers=owner.csrf).get_json()["answer"] == "Sim, R$ 13."
    assert knowledge.read(settings).endswith("Sim, R$ 13.")
