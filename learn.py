"""Learned answers: what a person answered after the bot handed a chat over, offered to the owner for the knowledge.

When the bot hands a chat to a person (a phrase, or Gemini's `transfer_to_human`), `note_handoff`
keeps what the customer asked. The first time a person then answers in that chat (from the phone or
the panel), `person_answered` (one script) enqueues `study` on the bot's RQ queue: never on the
webhook's request path, Gemini is asked once, with structured output, whether the exchange holds an
answer other customers could get too. If so it waits at /panel/aprendeu as a suggestion; only the
owner's approval appends it to the number's knowledge (knowledge.py), and a rejected question is
never suggested again. The customer's number and name are stripped before Gemini reads the exchange,
and a suggestion that still names them is dropped.
"""

import hashlib
import json
import logging
import re
import secrets
import time
import unicodedata

from google.genai import errors, types
from rq import Retry

import ai_service
import budget
import knowledge
import memory
import stats

log = logging.getLogger(__name__)

SUGGESTIONS = "wa:suggestions"  # hash: id -> suggestion JSON
REJECTED = "wa:suggestions:rejected"  # set: fingerprints of rejected questions
JOB = "learn.study"
MARKER_SECONDS = 86400  # a person's answer counts for a day after the handoff
CONTEXT_TURNS = 6  # turns of history before the handoff that Gemini reads with it

SCHEMA = {
    "type": "object",
    "properties": {"reusable": {"type": "boolean"}, "question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["reusable", "question", "answer"],
}

INSTRUCTION = (
    "Você ajuda uma pequena loja a montar a base de conhecimento do atendente virtual dela no WhatsApp. "
    "Abaixo está uma conversa em que o bot passou o cliente para uma pessoa da equipe, seguida da resposta "
    "dessa pessoa. Diga se a resposta da pessoa traz uma informação que serve para outros clientes também "
    "(preço, prazo, horário, política, produto, forma de pagamento, entrega). Não serve: o que só vale para "
    "o pedido ou a situação deste cliente, cumprimentos, \"já vou verificar\". Se servir, escreva a pergunta "
    "de forma geral, como outro cliente perguntaria, e a resposta curta e fiel ao que a pessoa disse. Nunca "
    "escreva nomes, telefones, endereços ou outros dados do cliente. Se não servir, reusable é false e "
    "question e answer ficam vazios."
)
LABELS = {"user": "Cliente", "model": "Atendente virtual", "person": "Pessoa da loja"}

# KEYS: the chat's marker; ARGV: the person's answer. 1 only for the first answer after a handoff.
PERSON_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], 'answer', ARGV[1])
"""


def marker_key(cid):
    return f"wa:learn:{cid}"


def note_handoff(redis, cid, reply, settings):
    """The bot handed the chat over: keep what the customer asked (and the turns before) for a day."""
    if not settings.learn_from_handoffs:
        return
    before = memory.load_history(redis, cid)[-CONTEXT_TURNS:]
    asked = [{"role": t["role"], "text": t["text"]} for t in before if t.get("text") and t.get("by") != "human"]
    asked.append({"role": "user", "text": reply["user_text"]})
    key = marker_key(cid)
    pipe = redis.pipeline()
    pipe.delete(key)  # a new handoff starts over, even if a person answered the last one
    pipe.hset(key, mapping={"instance": reply["instance"], "name": reply.get("name") or "",
                            "number": reply["reply_to"], "asked": json.dumps(asked, ensure_ascii=False)})
    pipe.expire(key, MARKER_SECONDS)
    pipe.execute()


def person_answered(redis, queue, cid, text, settings):
    """A person wrote `text` in chat `cid`: the first answer after a handoff enqueues `study`. Returns whether it did."""
    if not settings.learn_from_handoffs or not (text or "").strip():
        return False
    if not redis.register_script(PERSON_SCRIPT)(keys=[marker_key(cid)], args=[text.strip()]):
        return False
    queue.enqueue(JOB, cid, job_id=f"learn-{cid}", result_ttl=0, failure_ttl=86400, retry=Retry(max=2),
                  job_timeout=int(settings.gemini_timeout_seconds) + 30)
    log.info("chat %s: a person answered after a handoff; asking Gemini whether it is worth keeping", cid)
    return True


def study(cid):
    """RQ entry point: ask Gemini about the chat's handoff and the person's answer (in the worker)."""
    import worker

    ctx = worker.get_context()
    return learn(ctx.redis, ctx.genai, ctx.settings, cid)


def learn(redis, client, settings, cid, now=None):
    """Ask Gemini once whether the exchange holds a reusable answer; the suggestion made, or None.

    The marker goes only once Gemini answered (or cannot help): a failure RQ retries finds it again.
    """
    marker = {k.decode(): v.decode() for k, v in redis.hgetall(marker_key(cid)).items()}
    if "answer" not in marker:
        return None
    try:
        verdict = _ask(redis, client, settings, marker)
    except ai_service.ReplyError as error:
        if error.retryable:
            raise
        log.warning("chat %s: Gemini could not judge the person's answer: %s", cid, error.reason)
        verdict = None
    redis.delete(marker_key(cid))
    if not verdict or verdict.get("reusable") is not True:
        log.info("chat %s: nothing reusable in the person's answer", cid)
        return None
    question, answer = _clean(verdict.get("question")), _clean(verdict.get("answer"))
    if not question or not answer:
        return None
    if _names_customer(f"{question} {answer}", marker.get("name", ""), marker.get("number", "")):
        log.warning("chat %s: the suggestion named the customer; dropped", cid)
        return None
    return suggest(redis, settings, marker["instance"], cid, question, answer, now)


def _ask(redis, client, settings, marker):
    """Gemini's verdict {"reusable", "question", "answer"} on the exchange, without the customer's name and number."""
    name, number = marker.get("name", ""), marker.get("number", "")
    turns = [*json.loads(marker["asked"]), {"role": "person", "text": marker["answer"]}]
    transcript = "\n".join(f"{LABELS.get(t['role'], 'Cliente')}: {scrub(t['text'], name, number)}" for t in turns)
    if not budget.allow(redis, settings):
        raise ai_service.ReplyError("GEMINI_MAX_CALLS_PER_HOUR reached", retryable=False)
    config = types.GenerateContentConfig(
        system_instruction=INSTRUCTION, response_mime_type="application/json", response_schema=SCHEMA,
        max_output_tokens=settings.gemini_max_output_tokens, thinking_config=ai_service.thinking_config(settings),
    )
    started = time.monotonic()
    try:
        response = client.models.generate_content(model=settings.gemini_model, contents=transcript, config=config)
    except errors.APIError as error:
        retryable = error.code in (408, 429) or (error.code or 500) >= 500
        raise ai_service.ReplyError(f"Gemini answered {error.code} {error.status}", retryable) from error
    except Exception as error:  # the SDK's transport failed
        raise ai_service.ReplyError(f"Gemini unreachable: {type(error).__name__}", retryable=True) from error
    usage = response.usage_metadata.model_dump(exclude_none=True) if response.usage_metadata else {}
    pipe = redis.pipeline(transaction=False)  # the panel's counters, as a reply's
    stats.gemini_call(pipe, time.monotonic() - started, usage.get("total_token_count"))
    stats.prompt_tokens(pipe, usage)
    pipe.execute()
    verdict = response.parsed
    if not isinstance(verdict, dict):
        try:
            verdict = json.loads(ai_service._text(response) or "null")
        except ValueError:
            verdict = None
    return verdict if isinstance(verdict, dict) else None


PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


def _name_parts(name):
    return [part for part in re.split(r"\W+", name or "") if len(part) >= 3]


def scrub(text, name, number):
    """`text` without the customer's name, any phone number (theirs or not) and e-mail address."""
    text = EMAIL.sub("[e-mail]", text)
    text = PHONE.sub(lambda m: "[telefone]" if len(re.sub(r"\D", "", m.group())) >= 8 else m.group(), text)
    for part in _name_parts(name):
        text = re.sub(rf"\b{re.escape(part)}\b", "[cliente]", text, flags=re.IGNORECASE)
    return text


def _names_customer(text, name, number):
    """Whether `text` holds the customer's name or number, or any phone number or e-mail: every one was
    taken out of what Gemini read, so one in its answer is the customer's or made up."""
    digits = re.sub(r"\D", "", number or "")
    if len(digits) >= 8 and digits[-8:] in re.sub(r"\D", "", text):
        return True
    if EMAIL.search(text) or any(len(re.sub(r"\D", "", m.group())) >= 8 for m in PHONE.finditer(text)):
        return True
    return any(re.search(rf"\b{re.escape(part)}\b", text, re.IGNORECASE) for part in _name_parts(name))


def _clean(text):
    return " ".join(str(text or "").split())[:1000]


def fingerprint(question):
    """The same question however written: no accents, case, punctuation or extra spaces."""
    plain = unicodedata.normalize("NFKD", question).encode("ascii", "ignore").decode().lower()
    return hashlib.sha256(" ".join(re.findall(r"[a-z0-9]+", plain)).encode()).hexdigest()[:24]


def suggest(redis, settings, instance, cid, question, answer, now=None):
    """Offer a question and answer to the owner, unless rejected before, already waiting, or already known."""
    mark = fingerprint(question)
    if redis.sismember(REJECTED, mark):
        log.info("chat %s: a suggestion the owner rejected before; not offered again", cid)
        return None
    if any(fingerprint(item["question"]) == mark for item in suggestions(redis)):
        return None
    if qa_line(question, answer) in knowledge.for_instance(settings, instance):
        return None
    item = {"id": secrets.token_hex(6), "question": question, "answer": answer, "chat_id": cid,
            "at": int(time.time() if now is None else now), "instance": instance}
    redis.hset(SUGGESTIONS, item["id"], json.dumps(item, ensure_ascii=False))
    log.info("chat %s: suggestion %s waits for the owner's approval", cid, item["id"])
    return item


def suggestions(redis):
    """Every suggestion waiting for the owner, newest first."""
    items = [json.loads(raw) for raw in redis.hvals(SUGGESTIONS)]
    return sorted(items, key=lambda item: item["at"], reverse=True)


def qa_line(question, answer):
    """How an approved suggestion reads in the knowledge: one line."""
    return f"- Pergunta: {question} — Resposta: {answer}"


def _take(redis, sid):
    pipe = redis.pipeline()
    pipe.hget(SUGGESTIONS, sid)
    pipe.hdel(SUGGESTIONS, sid)
    raw, removed = pipe.execute()
    return json.loads(raw) if raw and removed else None


def approve(redis, settings, sid, answer=None):
    """Append the suggestion (with the owner's edited `answer`, if any) to its number's knowledge; None if unknown."""
    item = _take(redis, sid)
    if item is None:
        return None
    if answer is not None and _clean(answer):
        item["answer"] = _clean(answer)
    name = knowledge.name_for(settings, item["instance"])
    try:
        knowledge.append(settings, name, qa_line(item["question"], item["answer"]))
    except OSError:
        redis.hset(SUGGESTIONS, sid, json.dumps(item, ensure_ascii=False))  # kept for another try
        raise
    log.info("suggestion %s approved into knowledge %s", sid, name)
    return {**item, "knowledge": name}


def reject(redis, sid):
    """Drop the suggestion; its question is never suggested again. None if unknown."""
    item = _take(redis, sid)
    if item is not None:
        redis.sadd(REJECTED, fingerprint(item["question"]))
        log.info("suggestion %s rejected", sid)
    return item
