"""The per-chat Redis state machine (buffer.py) on fakeredis: dedupe, debounce, claim, finish, limits.

Times are passed as `now=` so nothing waits; when a chat is due is read from `wa:due`, the only schedule.
"""

import dataclasses
import json
import threading

import pytest

import buffer
import chats
import dispatch
import memory
import parser
import webhook
from config import load_settings
from conftest import CUSTOMER, INSTANCE, TOKEN, load_payload, text_message

JID = f"{CUSTOMER}@s.whatsapp.net"
CID = buffer.chat_ref(INSTANCE, JID)
T0 = 1_800_000_000.0  # a fixed "now" for the tests that pass time explicitly


def incoming(text, message_id, **kwargs):
    return parser.parse_body(text_message(text, message_id, **kwargs))[0]


def texts(entries):
    return [entry["text"] for entry in entries]


def burst_texts(redis):
    return [json.loads(entry)["text"] for entry in redis.lrange(f"wa:burst:{CID}", 0, -1)]


def make_settings(**overrides):
    """Settings for the state machine alone: no Gemini or Evolution is reached from buffer.py."""
    env = {"DEBOUNCE_SECONDS": "10", "DEDUPE_TTL_SECONDS": "900", "SWEEP_SECONDS": "15", "WEBHOOK_TOKEN": TOKEN}
    return load_settings({**env, **{k.upper(): str(v) for k, v in overrides.items()}}, require=())


@pytest.fixture
def settings():
    return make_settings()


@pytest.fixture
def add(fake_redis, settings):
    """add(text, id, now=…, settings=…, **text_message kwargs) → add_message's outcome."""

    def add_(text, message_id, now=T0, settings=settings, trigger=None, **kwargs):
        return buffer.add_message(fake_redis, incoming(text, message_id, **kwargs), settings,
                                  trigger=trigger, now=now)

    return add_


# --- dedupe and debounce ---------------------------------------------------------------------

def test_same_message_id_is_buffered_once_and_remembered_for_dedupe_ttl(add, fake_redis):
    assert add("oi", "DUP1") == "scheduled"
    assert add("oi", "DUP1", now=T0 + 1) == "duplicate"
    assert fake_redis.llen(f"wa:burst:{CID}") == 1
    assert fake_redis.hexists(memory.ids_key(CID), memory.id_field("DUP1"))  # one small hash per chat
    assert fake_redis.ttl(memory.ids_key(CID)) == 900


def test_same_message_id_on_another_instance_is_another_message(add, fake_redis):
    assert add("oi", "SAMEID") == "scheduled"
    assert add("oi", "SAMEID", instance="loja2") == "scheduled"
    assert fake_redis.llen(f"wa:burst:{buffer.chat_ref('loja2', JID)}") == 1


def test_each_message_pushes_the_deadline_to_now_plus_debounce(add, fake_redis):
    add("oi", "D1", now=T0)
    assert fake_redis.zscore(buffer.DUE, CID) == T0 + 10
    add("tudo bem?", "D2", now=T0 + 4)
    assert fake_redis.zscore(buffer.DUE, CID) == T0 + 14


def test_a_burst_is_one_entry_in_wa_due_at_its_last_deadline_and_no_rq_job(add, fake_redis, queue):
    outcomes = [add(text, f"B{i}", now=T0 + i) for i, text in enumerate(["oi", "tudo bem?", "quanto custa?"])]
    assert outcomes == ["scheduled", "buffered", "buffered"]
    assert fake_redis.zrange(buffer.DUE, 0, -1, withscores=True) == [(CID.encode(), T0 + 2 + 10)]
    assert queue.count == 0 and queue.scheduled_job_registry.count == 0  # the webhook writes no RQ job


def test_claim_waits_before_the_deadline_and_takes_the_burst_after(add, fake_redis):
    add("oi", "W1", now=T0)
    add("quanto custa?", "W2", now=T0 + 5)

    state, token, until, entries, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 14)
    assert (state, token, until, entries) == ("wait", None, T0 + 15, [])
    assert fake_redis.llen(f"wa:burst:{CID}") == 2

    state, token, reply, entries, tries = buffer.claim(fake_redis, CID, 90, now=T0 + 15)
    assert state == "ready" and token and reply == "" and tries == 1
    assert texts(entries) == ["oi", "quanto custa?"]
    assert fake_redis.llen(f"wa:burst:{CID}") == 0
    assert fake_redis.zscore(buffer.DUE, CID) == T0 + 15 + 90 + 1  # the lease: dispatched again if the job dies
    assert 0 < fake_redis.ttl(f"wa:inflight:{CID}") <= 7 * 86400  # never kept forever


def test_two_claims_at_once_give_one_ready(add, fake_redis):
    add("oi", "L1", now=T0)
    start = threading.Barrier(2)
    states = []

    def claim():
        start.wait()
        states.append(buffer.claim(fake_redis, CID, 90, now=T0 + 20)[0])

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert states.count("ready") == 1  # the other sees the running job's lease ("wait")


def test_a_message_during_a_running_job_keeps_its_lease_so_no_second_job_is_dispatched(add, fake_redis, queue, settings):
    add("oi", "L2", now=T0)
    assert buffer.claim(fake_redis, CID, 90, now=T0 + 10)[0] == "ready"
    add("mais uma coisa", "L3", now=T0 + 11)  # its own deadline (T0 + 21) is inside the lease
    assert fake_redis.zscore(buffer.DUE, CID) == T0 + 101  # still the lease end
    assert buffer.claim(fake_redis, CID, 90, now=T0 + 25)[0] == "wait"
    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 25 + settings.sweep_seconds) == []
    assert burst_texts(fake_redis) == ["mais uma coisa"]


def test_claim_with_a_stored_reply_leaves_new_messages_for_the_next_burst(add, fake_redis):
    add("oi", "R1", now=T0)
    _, token, _, _, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 10)
    buffer.store_reply(fake_redis, CID, token, {"parts": ["Olá!"], "sent": 0})
    buffer.retry_later(fake_redis, CID, token, 5, now=T0 + 11)  # the send failed
    add("e o horário?", "R2", now=T0 + 12)
    assert fake_redis.zscore(buffer.DUE, CID) == T0 + 16  # the reply keeps its time: the new burst waits for it

    state, _, stored, entries, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 30)
    assert state == "ready"
    assert '"Olá!"' in stored
    assert texts(entries) == ["oi"]  # the burst the stored reply answers, not the new message
    assert burst_texts(fake_redis) == ["e o horário?"]


def test_claim_during_a_retry_backoff_waits_then_takes_the_same_burst_again(add, fake_redis):
    add("oi", "RB1", now=T0)
    _, token, _, _, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 10)
    assert buffer.retry_later(fake_redis, CID, token, 5, now=T0 + 11)  # Gemini failed
    assert fake_redis.zscore(buffer.DUE, CID) == T0 + 16
    assert not buffer.retry_later(fake_redis, CID, token, 5, now=T0 + 11)  # released: the token holds nothing

    assert buffer.claim(fake_redis, CID, 90, now=T0 + 12)[:3] == ("wait", None, T0 + 16)
    state, _, reply, entries, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 16)
    assert state == "ready" and reply == "" and texts(entries) == ["oi"]


def test_finish_with_new_messages_schedules_the_next_burst(add, fake_redis, settings):
    add("oi", "F1", now=T0)
    _, token, _, _, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 10)
    assert add("mais uma coisa", "F2", now=T0 + 12) == "buffered"  # the running job has the chat

    assert buffer.finish(fake_redis, CID, token, settings, now=T0 + 13) == "next"
    assert fake_redis.zscore(buffer.DUE, CID) == T0 + 22
    state, _, _, entries, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 22)
    assert state == "ready" and texts(entries) == ["mais uma coisa"]


def test_finish_without_new_messages_releases_the_chat(add, fake_redis, settings):
    add("oi", "F3", now=T0)
    _, token, _, _, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 10)
    assert buffer.finish(fake_redis, CID, token, settings, now=T0 + 11) == "done"
    assert fake_redis.zscore(buffer.DUE, CID) is None
    assert not fake_redis.exists(f"wa:lock:{CID}", f"wa:inflight:{CID}", f"wa:deadline:{CID}")
    assert buffer.claim(fake_redis, CID, 90, now=T0 + 12)[0] == "idle"


def test_finish_by_a_job_whose_lock_was_taken_over_changes_nothing(add, fake_redis, settings):
    add("oi", "F4", now=T0)
    _, stale, _, _, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 10)
    fake_redis.delete(f"wa:lock:{CID}")  # the lease ran out
    state, token, _, _, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 200)
    assert state == "ready"
    assert buffer.finish(fake_redis, CID, stale, settings, now=T0 + 201) == "lost"
    assert fake_redis.get(f"wa:lock:{CID}").decode() == token
    assert fake_redis.llen(f"wa:inflight:{CID}") == 1


# --- erasure -----------------------------------------------------------------------------------

def test_forget_chat_erases_everything_about_that_chat_only(add, fake_redis, settings):
    add("oi", "E1", now=T0, trigger=True)
    _, token, _, _, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 10)
    buffer.store_reply(fake_redis, CID, token, {"parts": ["Olá!"], "sent": 0})
    buffer.count_attempt(fake_redis, CID)
    buffer.note_sending(fake_redis, INSTANCE, CID, "r1", "Olá!")
    memory.record_sent(fake_redis, CID, INSTANCE, "r1", "3EB0SENT1", "Olá!", settings, f"wa:lock:{CID}", token)
    buffer.finish(fake_redis, CID, token, settings, hold="optout", now=T0 + 10)
    add("outra", "E2", now=T0 + 11)
    chats.take_over(fake_redis, CID, settings)
    other = buffer.chat_ref(INSTANCE, "5521977772222@s.whatsapp.net")
    add("sou outro cliente", "E3", now=T0, number="5521977772222")

    assert chats.forget_customer(fake_redis, INSTANCE, "+55 11 99999-4321") > 0
    assert [key for key in fake_redis.keys() if CID.encode() in key] == []
    assert fake_redis.zscore(buffer.DUE, CID) is None
    assert fake_redis.llen(f"wa:burst:{other}") == 1 and fake_redis.zscore(buffer.DUE, other) is not None


# --- limits and who is answered ------------------------------------------------------------------

def test_max_burst_messages_keeps_only_the_latest(add, fake_redis):
    capped = make_settings(MAX_BURST_MESSAGES=3)
    for i in range(5):
        add(f"msg {i}", f"CAP{i}", now=T0 + i, settings=capped)
    _, _, _, entries, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 20)
    assert texts(entries) == ["msg 2", "msg 3", "msg 4"]


def test_rate_limit_stops_buffering_after_n_messages_an_hour(add, fake_redis):
    limited = make_settings(RATE_LIMIT_PER_HOUR=2)
    outcomes = [add(f"msg {i}", f"RL{i}", now=T0 + i, settings=limited) for i in range(3)]
    assert outcomes == ["scheduled", "buffered", "rate_limited"]
    assert fake_redis.llen(f"wa:burst:{CID}") == 2
    assert 0 < fake_redis.ttl(f"wa:rate:{CID}") <= 3600


def test_paused_chat_is_not_buffered(add, fake_redis, settings):
    chats.take_over(fake_redis, CID, settings)
    assert add("oi", "P1") == "paused"
    assert fake_redis.llen(f"wa:burst:{CID}") == 0
    assert fake_redis.zscore(buffer.DUE, CID) is None


def test_opted_out_chat_is_not_buffered(add, fake_redis, settings):
    add("sair", "O0", now=T0)
    _, token, _, _, _ = buffer.claim(fake_redis, CID, 90, now=T0 + 10)
    buffer.finish(fake_redis, CID, token, settings, hold="optout", now=T0 + 11)
    assert add("oi", "O1") == "opted_out"
    assert fake_redis.llen(f"wa:burst:{CID}") == 0
    assert fake_redis.zscore(buffer.DUE, CID) is None


def test_claim_drops_a_burst_when_the_chat_was_paused_meanwhile(add, fake_redis, settings):
    add("oi", "P2", now=T0)
    fake_redis.set(f"wa:paused:{CID}", "handoff", ex=600)  # as the handoff's finish leaves it
    assert buffer.claim(fake_redis, CID, 90, now=T0 + 10)[0] == "paused"
    assert fake_redis.zscore(buffer.DUE, CID) is None
    assert not fake_redis.exists(f"wa:burst:{CID}", f"wa:inflight:{CID}", f"wa:lock:{CID}")


def test_trigger_keywords_open_a_session_that_later_messages_stay_in(fake_redis):
    settings = make_settings(TRIGGER_KEYWORDS="pedido,orçamento", SESSION_EXPIRE_MINUTES=30, REDIS_DOWN="retry")
    client = webhook.create_app(settings, fake_redis).test_client()

    def post(text, message_id):
        response = client.post(f"/webhook?token={TOKEN}", json=text_message(text, message_id))
        assert response.status_code == 200, response.text
        return response.get_json()["results"]

    assert post("oi, bom dia", "T1") == ["no_trigger"]
    assert fake_redis.llen(f"wa:burst:{CID}") == 0
    assert post("quero fazer um pedido", "T2") == ["scheduled"]
    assert post("é para amanhã", "T3") == ["buffered"]  # no trigger word, but the conversation is open
    assert 0 < fake_redis.ttl(f"wa:session:{CID}") <= 30 * 60
    assert fake_redis.llen(f"wa:burst:{CID}") == 2


def test_forget_by_phone_also_erases_the_chat_kept_under_its_lid(fake_redis, settings):
    """2.3.5/2.3.6 send both addresses (payload 04); a later message may carry only the '@lid' (payload 63)."""
    both = parser.parse_body(load_payload("04_v2_3_5plus_lid_with_remoteJidAlt_long_buffer_quirk.json"))[0]
    lid_only = dataclasses.replace(both, chat_id=both.lid, reply_to=both.lid, message_id="LIDONLY1")
    for message in (both, lid_only):
        buffer.add_message(fake_redis, message, settings, now=T0)
    lid_chat = buffer.chat_ref(both.instance, both.lid)
    assert fake_redis.exists(f"wa:burst:{lid_chat}")

    chats.forget_customer(fake_redis, both.instance, both.chat_id.split("@")[0])

    assert [key for key in fake_redis.keys() if lid_chat.encode() in key or b"wa:lid:" in key] == []
