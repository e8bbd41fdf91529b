"""The busy hour on real processes (redis-server, gunicorn, `python worker.py`, fake Evolution and Gemini):
many chats at once while Gemini is slow, a backlog that never grows the queue, and a Redis that is full."""

import threading
import time

import pytest
import redis as redis_lib

from conftest import RedisServer, Stack, free_port, text_message, wait_until

PARTS = ["Parte um.", "Parte dois.", "Parte três."]


class SlowGemini:
    """A responder for FakeGemini that takes `seconds` per call and records how many calls overlap, per chat too."""

    def __init__(self, gemini, seconds, reply="\n\n".join(PARTS)):
        self.seconds, self.reply = seconds, reply
        self.lock = threading.Lock()
        self.running, self.most, self.per_chat, self.most_per_chat = 0, 0, {}, 0
        gemini.responder = self

    def __call__(self, body):
        chat = body["contents"][-1]["parts"][0]["text"]  # the burst's text names its number
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.per_chat[chat] = self.per_chat.get(chat, 0) + 1
            self.most_per_chat = max(self.most_per_chat, self.per_chat[chat])
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
            self.per_chat[chat] -= 1
        return self.reply


def post_bursts(stack, numbers, tag):
    """Each number writes two messages at once (one burst), all numbers together."""
    def burst(number):
        stack.post(text_message("oi", f"{tag}-{number}-1", number=number))
        stack.post(text_message(f"sou {number}", f"{tag}-{number}-2", number=number))

    threads = [threading.Thread(target=burst, args=(number,)) for number in numbers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def by_number(evolution):
    sent = {}
    for _, number, text in evolution.sent_texts():
        sent.setdefault(number, []).append(text)
    return sent


def test_one_worker_process_answers_many_chats_while_gemini_is_slow(start_stack, gemini, evolution):
    stack = start_stack(worker_concurrency=20)
    slow = SlowGemini(gemini, seconds=1.5)
    numbers = [f"55119997{n:05d}" for n in range(20)]

    started = time.monotonic()
    post_bursts(stack, numbers, "SLOW")
    wait_until(lambda: len(evolution.sent_texts()) == 3 * len(numbers), timeout=60, message="every reply")
    took = time.monotonic() - started
    time.sleep(1.5)

    assert took < 12, f"20 calls of 1.5 s took {took:.1f} s: they did not overlap"  # one at a time: over 30 s
    assert slow.most >= 10 and slow.most_per_chat == 1  # many chats at once; never one chat twice at once
    assert len(gemini.requests) == len(numbers)
    assert by_number(evolution) == {number: PARTS for number in numbers}  # one reply each, its parts in order
    assert sorted(gemini.user_texts(i)[0] for i in range(len(numbers))) == sorted(f"oi\nsou {n}" for n in numbers)


def test_a_backlog_never_queues_a_chat_twice(start_stack, gemini, evolution):
    stack = start_stack(worker_concurrency=2)  # 20 chats × 1 s / 2 threads: the backlog lasts 5 × SWEEP_SECONDS
    SlowGemini(gemini, seconds=1.0, reply="Olá!")
    numbers = [f"55119996{n:05d}" for n in range(20)]
    redis = stack.redis.client()
    longest, done = [0], threading.Event()

    def watch_queue():
        while not done.is_set():
            longest[0] = max(longest[0], redis.llen("rq:queue:whatsapp"))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_queue)
    watcher.start()
    try:
        post_bursts(stack, numbers, "BACKLOG")
        wait_until(lambda: len(evolution.sent_texts()) == len(numbers), timeout=60, message="every reply")
        time.sleep(2 * 2 + 1)  # two more sweeps: nothing left to answer, nothing queued
    finally:
        done.set()
        watcher.join()

    assert longest[0] <= len(numbers), f"the queue held {longest[0]} jobs for {len(numbers)} chats"
    assert redis.llen("rq:queue:whatsapp") == 0 and redis.hlen("wa:queued") == 0
    assert by_number(evolution) == {number: ["Olá!"] for number in numbers}
    assert len(gemini.requests) == len(numbers)


@pytest.fixture
def small_redis(tmp_path):
    server = RedisServer(tmp_path, extra_args=("--maxmemory", "30mb", "--maxmemory-policy", "noeviction")).start()
    yield server
    server.stop()


class Full:
    """Redis full at its maxmemory (noeviction), as the bot meets it, until `free()`.

    Fills it with data until a write is refused, then lowers maxmemory under what is used: Redis frees
    client buffers a moment after a big write, which would let small writes through again.
    """

    def __init__(self, client):
        self.client, self.count = client, 0
        self.maxmemory = client.config_get("maxmemory")["maxmemory"]
        while True:
            try:
                client.set(f"filler:{self.count}", b"x" * 256 * 1024)
                self.count += 1
            except redis_lib.ResponseError as error:
                assert "maxmemory" in str(error)
                break
        client.config_set("maxmemory", "1mb")

    def free(self):
        self.client.delete(*self.client.keys("filler:*"))
        self.client.config_set("maxmemory", self.maxmemory)


def test_workers_outlive_a_full_redis_and_answer_once_when_memory_is_freed(bot_env, small_redis, processes,
                                                                           gemini, evolution):
    env = {**bot_env, "REDIS_URL": small_redis.url, "PORT": str(free_port()), "SWEEP_SECONDS": "2",
           "JOB_LEASE_SECONDS": "20"}
    stack = Stack(env, small_redis, processes)
    client = small_redis.client()
    gemini.reply_with("Temos sim!")
    gemini.hold()
    stack.post(text_message("tem bolo de cenoura?", "FULL1"))
    wait_until(lambda: gemini.requests, timeout=20, message="the Gemini call")
    full = Full(client)
    gemini.release()  # the job cannot store the answer: Redis refuses every write

    time.sleep(8)  # RQ's loop meets the full Redis (its heartbeat, the failed job's record) within a few seconds
    worker = stack.workers[0]
    assert worker.process.poll() is None, "the worker process exited while Redis was full"
    assert evolution.sent_texts() == []
    assert "maxmemory" in worker.output()

    full.free()
    wait_until(lambda: evolution.sent_texts(), timeout=20 + 10 + 20, message="the reply once Redis takes writes")
    time.sleep(2 * 2 + 1)
    assert [text for _, _, text in evolution.sent_texts()] == ["Temos sim!"]
    assert worker.process.poll() is None


def test_a_part_sent_as_redis_fills_up_is_never_sent_again_once_memory_is_freed(
        bot_env, small_redis, processes, gemini, evolution):
    env = {**bot_env, "REDIS_URL": small_redis.url, "PORT": str(free_port()), "SWEEP_SECONDS": "2",
           "JOB_LEASE_SECONDS": "20"}
    stack = Stack(env, small_redis, processes)
    client = small_redis.client()
    gemini.reply_with("Chega amanhã.")
    evolution.delay_next("sendText", 3)
    stack.post(text_message("quando chega meu pedido?", "FULL2"))
    wait_until(lambda: evolution.calls("sendText"), timeout=20, message="the sendText call")
    full = Full(client)  # while Evolution sends it: the job cannot record that the part went out
    wait_until(lambda: evolution.sent_texts(), timeout=10, message="Evolution to finish the send")
    time.sleep(3)

    full.free()
    time.sleep(20 + 2 * 2 + 3)  # past the job's lease: a job taking the chat over would send the part again
    assert [text for _, _, text in evolution.sent_texts()] == ["Chega amanhã."]
    assert client.zcard("wa:due") == 0  # the chat was released
    assert stack.workers[0].process.poll() is None
