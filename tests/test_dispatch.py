"""The dispatcher (dispatch.py) on fakeredis: `wa:due` → RQ jobs, once each, never early, again when a job is lost.

Times are passed as `now=`; the jobs it enqueues are read back from RQ's queue (nothing runs them here
except where a test runs one through the real claim script).
"""

import json

import pytest

import buffer
import dispatch
import parser
from config import load_settings
from conftest import TOKEN, text_message

T0 = 1_800_000_000.0


@pytest.fixture
def settings():
    return load_settings({"DEBOUNCE_SECONDS": "10", "SWEEP_SECONDS": "15", "WEBHOOK_TOKEN": TOKEN}, require=())


@pytest.fixture
def add(fake_redis, settings):
    def add_(text, message_id, now, number="5511999994321"):
        message = parser.parse_body(text_message(text, message_id, number=number))[0]
        buffer.add_message(fake_redis, message, settings, now=now)
        return buffer.chat_ref(message.instance, message.chat_id)

    return add_


def job_args(queue):
    return [(job.func_name, job.args) for job in queue.jobs]


def test_only_chats_whose_time_has_come_are_enqueued_once_each(add, fake_redis, queue, settings):
    first = add("oi", "D1", now=T0)
    second = add("oi", "D2", now=T0 + 5, number="5511999990002")

    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 9.9) == []  # debounce not over: not early
    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 10) == [first]
    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 11) == []  # another worker's poll: nothing twice
    job = queue.jobs[0]
    assert job_args(queue) == [("worker.answer_chat", (first, job.id))]  # the job's id is its ticket
    assert fake_redis.zscore(buffer.DUE, first) == T0 + 25 and fake_redis.zscore(buffer.DUE, second) == T0 + 15
    assert job.timeout == settings.job_timeout_seconds and job.result_ttl == 0


def test_the_ticket_lets_the_job_claim_and_a_message_after_dispatch_makes_it_stale(add, fake_redis, queue, settings):
    cid = add("oi", "T1", now=T0)
    dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 10)
    ticket = queue.jobs[0].args[1]
    add("tudo bem?", "T2", now=T0 + 10.1)  # the customer was still typing: the burst's deadline moves on

    assert buffer.claim(fake_redis, cid, 90, ticket, now=T0 + 10.2)[0] == "wait"  # the job does nothing
    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 20.0) == []
    fresh = dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 20.1)
    assert fresh == [cid]
    state, _, _, entries, _ = buffer.claim(fake_redis, cid, 90, queue.jobs[1].args[1], now=T0 + 20.2)
    assert state == "ready" and [e["text"] for e in entries] == ["oi", "tudo bem?"]


def test_a_lost_job_is_dispatched_again_after_sweep_seconds(add, fake_redis, queue, settings):
    cid = add("oi", "L1", now=T0)
    dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 10)
    queue.empty()  # the job is lost: a worker killed with it in hand, or Redis restarted before it was saved

    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 24.9) == []
    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 25) == [cid]
    assert buffer.claim(fake_redis, cid, 90, queue.jobs[0].args[1], now=T0 + 25.1)[0] == "ready"


def test_a_job_killed_mid_way_comes_back_when_its_lease_ends(add, fake_redis, queue, settings):
    cid = add("oi", "K1", now=T0)
    dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 10)
    assert buffer.claim(fake_redis, cid, 90, queue.jobs[0].args[1], now=T0 + 10)[0] == "ready"
    fake_redis.delete(buffer.keys(cid)["lock"])  # its lock expired with the dead worker

    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 100) == []  # the lease still runs
    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 101) == [cid]
    state, _, _, entries, tries = buffer.claim(fake_redis, cid, 90, queue.jobs[1].args[1], now=T0 + 101)
    assert state == "ready" and [e["text"] for e in entries] == ["oi"] and tries == 2


def test_a_backlog_larger_than_one_batch_is_all_dispatched(fake_redis, queue, settings):
    fake_redis.zadd(buffer.DUE, {f"chat{i}": T0 for i in range(dispatch.BATCH + 20)})
    assert len(dispatch.dispatch_due(fake_redis, queue, settings, now=T0)) == dispatch.BATCH
    assert len(dispatch.dispatch_due(fake_redis, queue, settings, now=T0)) == 20
    assert queue.count == dispatch.BATCH + 20


def test_the_next_part_keeps_its_time_when_the_customer_writes_meanwhile(add, fake_redis, queue, settings):
    cid = add("oi", "P1", now=T0)
    _, token, _, _, _ = buffer.claim(fake_redis, cid, 90, now=T0 + 10)
    reply = {"parts": ["Oi!", "Tudo bem?"], "sent": 1, "typed": 1}
    assert buffer.retry_later(fake_redis, cid, token, 2.0, reply=reply, now=T0 + 11)  # part 2 is being typed
    add("quanto custa?", "P2", now=T0 + 12)

    assert fake_redis.zscore(buffer.DUE, cid) == T0 + 13  # not pushed to the new burst's deadline
    assert json.loads(fake_redis.get(buffer.keys(cid)["reply"])) == reply
    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 13) == [cid]


def test_a_chat_whose_job_still_waits_in_the_queue_is_never_queued_again(add, fake_redis, queue, settings):
    cid = add("oi", "B1", now=T0)
    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 10) == [cid]
    for sweep in range(1, 6):  # a backlog: the job waits far longer than SWEEP_SECONDS
        assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 10 + 15 * sweep) == []
        assert fake_redis.zscore(buffer.DUE, cid) == T0 + 10 + 15 * (sweep + 1)  # looked at again later
    assert queue.count == 1

    job = queue.jobs[0]
    state, _, _, entries, tries = buffer.claim(fake_redis, cid, 90, job.args[1], now=T0 + 86)
    assert state == "ready" and [e["text"] for e in entries] == ["oi"] and tries == 1
    assert fake_redis.zscore(buffer.DUE, cid) == T0 + 86 + 90 + 1  # the lease starts when the job starts


def test_a_job_taken_by_a_worker_that_died_before_starting_it_is_queued_again(add, fake_redis, queue, settings):
    cid = add("oi", "I1", now=T0)
    dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 10)
    fake_redis.lmove(queue.key, queue.intermediate_queue_key)  # RQ took it (BLMOVE), then its process was killed

    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 25) == [cid]
    assert buffer.claim(fake_redis, cid, 90, queue.jobs[0].args[1], now=T0 + 25.1)[0] == "ready"


def test_a_message_after_dispatch_leaves_the_waiting_job_to_answer_at_the_new_deadline(add, fake_redis, queue, settings):
    cid = add("oi", "N1", now=T0)
    dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 10)
    add("tudo bem?", "N2", now=T0 + 12)  # the customer still typing: the deadline moves to T0 + 22

    assert dispatch.dispatch_due(fake_redis, queue, settings, now=T0 + 22) == []  # its job still waits: not queued again
    state, _, _, entries, _ = buffer.claim(fake_redis, cid, 90, queue.jobs[0].args[1], now=T0 + 23)
    assert state == "ready" and [e["text"] for e in entries] == ["oi", "tudo bem?"] and queue.count == 1
