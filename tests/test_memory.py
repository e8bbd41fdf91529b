"""The conversation store (memory.py): one record per chat, capped in bytes, read by Gemini and the panel.

Unit tests on fakeredis through the webhook's and the worker's own calls; the last test floods a real
redis-server at a scaled-down maxmemory through the real webhook and worker processes.
"""

import base64
import copy
import json
import time

import pytest
import requests

import buffer
import chats
import memory
import parser
from config import load_settings
from conftest import CUSTOMER, INSTANCE, TOKEN, RedisServer, Stack, load_payload, text_message, wait_until

JID = f"{CUSTOMER}@s.whatsapp.net"
CID = buffer.chat_ref(INSTANCE, JID)
T0 = 1_800_000_000.0


def make_settings(**overrides):
    env = {"DEBOUNCE_SECONDS": "10", "WEBHOOK_TOKEN": TOKEN}
    return load_settings({**env, **{k.upper(): str(v) for k, v in overrides.items()}}, require=())


def add(redis, text, message_id, settings, now=T0, **kwargs):
    message, = parser.parse_body(text_message(text, message_id, timestamp=now, **kwargs))
    return buffer.add_message(redis, message, settings, now=now)


def record(redis, cid=CID):
    return [json.loads(item) for item in redis.lrange(memory.key(cid), 0, -1)]


def values(redis, key):
    """Everything a key holds, as bytes (its members, fields and values)."""
    kind = redis.type(key).decode()
    if kind == "string":
        return [redis.get(key)]
    if kind == "list":
        return redis.lrange(key, 0, -1)
    if kind == "hash":
        return [part for pair in redis.hgetall(key).items() for part in pair]
    if kind == "zset":
        return redis.zrange(key, 0, -1)
    return list(redis.smembers(key))


def chat_bytes(redis, cid=CID):
    """Every byte kept under the chat's keys."""
    return sum(len(value) for key in redis.keys(f"*{cid}*") for value in values(redis, key))


# --- what is kept, and how small ---------------------------------------------------------------------

def test_a_long_text_is_stored_cut_with_a_marker_and_the_burst_keeps_what_gemini_reads(fake_redis):
    settings = make_settings(MAX_INPUT_CHARS=2000)
    text = "Olá, " + "pão de queijo " * 5000  # ~70 KB
    assert add(fake_redis, text, "LONG1", settings) == "scheduled"

    stored, = record(fake_redis)
    assert stored["text"].endswith("… [cortado]") and len(stored["text"].encode()) <= memory.MESSAGE_MAX_BYTES
    assert text.startswith(stored["text"][: -len(memory.CUT_MARK)])
    burst, = [json.loads(entry) for entry in fake_redis.lrange(buffer.keys(CID)["burst"], 0, -1)]
    assert burst["text"] == text[:2000]  # all that merge_burst would give Gemini, no more
    assert memory.thread(fake_redis, CID)[0]["text"] == stored["text"]


def test_short_texts_and_accents_are_kept_whole():
    assert memory.clip("ação", 6) == "ação"  # 6 bytes: fits
    assert memory.clip("ação" * 10, 20).endswith(memory.CUT_MARK)
    assert len(memory.clip("ação" * 10, 20).encode()) <= 20
    assert "\ufffd" not in memory.clip("çççççççççççççççç", 19)  # never half a character


def test_rate_limited_ignored_and_duplicate_messages_store_nothing(fake_redis):
    settings = make_settings(RATE_LIMIT_PER_HOUR=2)
    assert add(fake_redis, "um", "RL1", settings) == "scheduled"
    assert add(fake_redis, "dois", "RL2", settings) == "buffered"
    assert add(fake_redis, "dois", "RL2", settings) == "duplicate"
    assert add(fake_redis, "três " * 1000, "RL3", settings) == "rate_limited"
    assert [e["text"] for e in record(fake_redis)] == ["um", "dois"]

    triggered = make_settings(TRIGGER_KEYWORDS="pedido")
    message, = parser.parse_body(text_message("bom dia", "TR1", number="5521977772222", timestamp=T0))
    assert buffer.add_message(fake_redis, message, triggered, trigger=False, now=T0) == "no_trigger"
    assert not fake_redis.exists(memory.key(buffer.chat_ref(INSTANCE, "5521977772222@s.whatsapp.net")))


def voice(message_id, number=CUSTOMER):
    body = copy.deepcopy(load_payload("10_v2_audio_ptt_webhook_base64_placeholder.json"))
    body["instance"] = INSTANCE
    body["data"]["key"].update(remoteJid=f"{number}@s.whatsapp.net", id=message_id)
    body["data"]["messageTimestamp"] = int(T0)
    body["data"]["message"]["base64"] = base64.b64encode(b"OggS" + b"\x01" * 200).decode()
    message, = parser.parse_body(body)
    return message


def test_inline_media_is_kept_aside_only_for_a_burst_that_will_be_answered(fake_redis):
    settings = make_settings(RATE_LIMIT_PER_HOUR=1)
    media = buffer.keys(CID)["media"]
    assert buffer.add_message(fake_redis, voice("MEDIA1"), settings, now=T0) == "scheduled"
    assert fake_redis.hlen(media) == 1
    assert buffer.add_message(fake_redis, voice("MEDIA2"), settings, now=T0) == "rate_limited"
    assert buffer.add_message(fake_redis, voice("MEDIA1"), settings, now=T0) == "duplicate"
    assert fake_redis.hkeys(media) == [b"MEDIA1"]

    chats.take_over(fake_redis, CID, settings)  # a person holds the chat: kept in the record, never answered
    assert not fake_redis.exists(media)
    assert buffer.add_message(fake_redis, voice("MEDIA3"), make_settings(), now=T0) == "paused"
    assert not fake_redis.exists(media)
    assert [e.get("kind") for e in record(fake_redis)] == ["audio", "audio"]


def test_seen_and_sent_ids_live_in_one_small_hash_per_chat_pruned_past_its_size(fake_redis):
    settings = make_settings(RATE_LIMIT_PER_HOUR=0, DEDUPE_TTL_SECONDS=3600)
    for i in range(300):
        add(fake_redis, f"oi {i}", f"ID{i:04d}", settings, now=T0 + i)
    assert fake_redis.keys("wa:seen:*") == [] and fake_redis.keys("wa:ours:*") == []
    ids = memory.ids_key(CID)
    assert memory.IDS_MAX // 2 <= fake_redis.hlen(ids) <= memory.IDS_MAX
    assert fake_redis.ttl(ids) == 3600
    assert add(fake_redis, "oi 299", "ID0299", settings, now=T0 + 400) == "duplicate"  # the newest are kept
    assert add(fake_redis, "oi 0", "ID0000", settings, now=T0 + 400) != "duplicate"  # the oldest went


def test_a_flood_from_one_number_keeps_the_last_messages_and_a_bounded_record(fake_redis):
    settings = make_settings(RATE_LIMIT_PER_HOUR=0, MAX_BURST_MESSAGES=30)
    text = "x" * 64_000
    for i in range(300):
        add(fake_redis, f"{i:03d} {text}", f"FLOOD{i}", settings, now=T0 + i)

    kept = record(fake_redis)
    assert len(kept) == memory.MIN_MESSAGES == 20  # the panel still shows the last 20
    assert [e["text"][:3] for e in kept] == [f"{i:03d}" for i in range(280, 300)]
    record_bytes = sum(len(item) for item in fake_redis.lrange(memory.key(CID), 0, -1))
    assert record_bytes <= memory.MIN_MESSAGES * (memory.MESSAGE_MAX_BYTES + 200)
    burst = fake_redis.lrange(buffer.keys(CID)["burst"], 0, -1)
    assert len(burst) == 30 and all(len(entry) < settings.max_input_chars + 1000 for entry in burst)
    assert chat_bytes(fake_redis) < 200_000  # of 19 MB sent


def test_short_messages_keep_gemini_window_and_the_panel_keeps_at_least_its_minimum(fake_redis):
    settings = make_settings(HISTORY_MAX_TURNS=2)
    lock = buffer.keys(CID)["lock"]
    for i in range(12):
        add(fake_redis, f"pergunta {i}", f"Q{i}", settings, now=T0 + i)
        fake_redis.set(lock, "job")
        memory.record_sent(fake_redis, CID, INSTANCE, f"r{i}", f"A{i}", f"resposta {i}", settings, lock, "job")
    turns = memory.load_history(fake_redis, CID)
    assert 2 <= len(turns) <= 4 and turns[0]["role"] == "user"  # Gemini: at most 2 exchanges
    assert len(memory.thread(fake_redis, CID)) == 20  # the panel: MIN_MESSAGES
    assert memory.thread(fake_redis, CID)[-1] == {"id": "A11", "from": "bot", "text": "resposta 11",
                                                  "at": pytest.approx(time.time(), abs=5), "kind": "text"}


# --- one record, two views ---------------------------------------------------------------------------

def test_gemini_sees_the_record_without_the_burst_it_answers_but_with_a_reply_sent_meanwhile(fake_redis):
    settings = make_settings()
    lock = buffer.keys(CID)["lock"]
    add(fake_redis, "oi", "B1", settings)
    add(fake_redis, "tem bolo?", "B2", settings)
    fake_redis.set(lock, "job")
    memory.record_sent(fake_redis, CID, INSTANCE, "r1", "S1", "Oi!", settings, lock, "job")
    memory.record_sent(fake_redis, CID, INSTANCE, "r1", "S2", "Tem sim.", settings, lock, "job")
    add(fake_redis, "de chocolate?", "B3", settings, now=T0 + 5)  # the next burst, while the reply went out
    add(fake_redis, "e de morango?", "B4", settings, now=T0 + 6)  # written while that burst is answered

    assert memory.load_history(fake_redis, CID, {"B3"}) == [
        {"role": "user", "text": "oi\ntem bolo?"}, {"role": "model", "text": "Oi!\n\nTem sim."}]
    assert [(m["from"], m["text"]) for m in memory.thread(fake_redis, CID)] == [
        ("customer", "oi"), ("customer", "tem bolo?"), ("bot", "Oi!"), ("bot", "Tem sim."),
        ("customer", "de chocolate?"), ("customer", "e de morango?")]
    assert memory.details(fake_redis, CID)["last_text"] == "e de morango?"


def test_a_person_and_a_media_note_are_turns_of_their_own_side(fake_redis):
    settings = make_settings()
    lock = buffer.keys(CID)["lock"]
    buffer.add_message(fake_redis, voice("V1"), settings, now=T0)
    fake_redis.set(lock, "job")
    memory.record_sent(fake_redis, CID, INSTANCE, "r1", "S1", "Temos sim!", settings, lock, "job",
                       note="a cliente pergunta se tem bolo")
    memory.record_human(fake_redis, CID, "H1", "Deixa que eu vejo", T0 + 9, settings)
    assert memory.load_history(fake_redis, CID) == [
        {"role": "user", "text": "[áudio]\n[a cliente pergunta se tem bolo]"},
        {"role": "model", "text": "Temos sim!"}, {"role": "model", "text": "Deixa que eu vejo", "by": "human"}]


def test_history_kept_before_the_store_is_still_read_and_counted(fake_redis):
    settings = make_settings()
    fake_redis.rpush(memory.key(CID), json.dumps({"role": "user", "text": "pedido antigo"}),
                     json.dumps({"role": "model", "text": "Anotado!"}))
    add(fake_redis, "e agora?", "N1", settings)
    assert memory.load_history(fake_redis, CID, {"N1"}) == [
        {"role": "user", "text": "pedido antigo"}, {"role": "model", "text": "Anotado!"}]
    sizes = sum(len(item) for item in fake_redis.lrange(memory.key(CID), 0, -1))
    assert int(fake_redis.hget(memory.meta_key(CID), "bytes")) == sizes


def test_a_job_that_lost_the_chat_writes_nothing_and_its_echo_is_still_ours(fake_redis):
    settings = make_settings()
    add(fake_redis, "oi", "L1", settings)
    buffer.note_sending(fake_redis, INSTANCE, CID, "r1", "Olá!")
    assert not memory.record_sent(fake_redis, CID, INSTANCE, "r1", "SENT1", "Olá!", settings,
                                  buffer.keys(CID)["lock"], "a-token-nobody-holds")
    assert [e["text"] for e in record(fake_redis)] == ["oi"]
    echo, = parser.parse_body(text_message("Olá!", "SENT1", from_me=True, timestamp=T0))
    assert chats.note_from_me(fake_redis, echo, settings) == "own"  # by its text, noted before sending


def test_our_echo_under_another_jid_than_the_chat_we_sent_to_is_still_ours(fake_redis):
    """A '@lid' chat (no phone JID known): we send to the lid, the echo may come under the phone JID."""
    settings = make_settings()
    body = load_payload("63_v2_3_7_lid_only_no_phone_jid.json")
    body["instance"] = INSTANCE
    body["data"]["messageTimestamp"] = int(T0)
    message, = parser.parse_body(body)
    buffer.add_message(fake_redis, message, settings, now=T0)
    lid_chat = buffer.chat_ref(INSTANCE, message.chat_id)
    lock = buffer.keys(lid_chat)["lock"]
    fake_redis.set(lock, "job")
    assert memory.record_sent(fake_redis, lid_chat, INSTANCE, "r1", "3EB0LIDSENT0000000001", "Claro!", settings, lock, "job")
    echo, = parser.parse_body(text_message("Claro!", "3EB0LIDSENT0000000001", from_me=True, timestamp=T0))
    assert echo.chat_id != message.chat_id
    assert chats.note_from_me(fake_redis, echo, settings) == "own"
    assert chats.note_from_me(fake_redis, echo, settings) == "duplicate"
    assert [key for key in fake_redis.keys("wa:own:*") if fake_redis.hlen(key)] == []  # gone once its echo came


def test_forget_leaves_no_key_and_no_text_of_the_chat(fake_redis):
    settings = make_settings()
    lock = buffer.keys(CID)["lock"]
    add(fake_redis, "meu endereço secreto", "F1", settings)
    _, token, _, _, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 11)
    memory.record_sent(fake_redis, CID, INSTANCE, "r1", "S1", "Anotado o endereço secreto", settings, lock, token)
    buffer.finish(fake_redis, CID, token, settings, now=T0 + 12)
    memory.record_human(fake_redis, CID, "H1", "confirmo o endereço secreto", T0 + 13, settings)
    add(fake_redis, "mais um segredo", "F2", settings, now=T0 + 14)
    buffer.add_message(fake_redis, voice("F3"), settings, now=T0 + 15)

    assert chats.forget_customer(fake_redis, INSTANCE, CUSTOMER) > 0
    assert [key for key in fake_redis.keys() if CID.encode() in key] == []
    assert fake_redis.zscore(memory.CHATS, CID) is None
    for key in fake_redis.keys():
        assert not any(b"secret" in value for value in values(fake_redis, key)), key


# --- one customer cannot fill Redis (real processes, real redis-server at a maxmemory) -------------------

def test_one_number_sending_300_texts_of_64_kb_cannot_make_redis_refuse_another_customer(
        bot_env, tmp_path, processes, gemini):
    """Compose gives Redis 256 MB with noeviction; here 8 MB: the 19 MB one number sends must not fit in it."""
    server = RedisServer(tmp_path, ("--maxmemory", "8mb", "--maxmemory-policy", "noeviction")).start()
    try:
        env = {**bot_env, "REDIS_URL": server.url, "PORT": str(__import__("conftest").free_port()),
               "DEBOUNCE_SECONDS": "0.5"}
        stack = Stack(env, server, processes)
        redis = server.client()
        before = redis.info("memory")["used_memory"]
        session = requests.Session()
        text = "Quero saber do meu pedido. " * 2400  # 64 KB
        codes = [session.post(f"{stack.url}/webhook", params={"token": TOKEN},
                              json=text_message(f"{i} {text}", f"FLOODER{i:03d}"), timeout=20).status_code
                 for i in range(300)]
        assert set(codes) == {200}  # never a 503: Redis took every one of them

        other = stack.post(text_message("oi, tudo bem?", "OTHER1", number="5521977772222"))
        assert other["results"] == ["scheduled"]
        other_cid = buffer.chat_ref(INSTANCE, "5521977772222@s.whatsapp.net")
        wait_until(lambda: redis.llen(memory.key(other_cid)) == 2, timeout=30, message="the other customer answered")
        grown = redis.info("memory")["used_memory"] - before
        assert grown < 1_500_000, grown  # of 19 MB sent
        settings = make_settings()
        bound = max(2 * settings.history_max_chars, memory.MIN_MESSAGES * (memory.MESSAGE_MAX_BYTES + 200))
        assert sum(len(item) for item in redis.lrange(memory.key(CID), 0, -1)) <= bound
    finally:
        server.stop()
