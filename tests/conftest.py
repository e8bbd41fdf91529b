"""Shared fixtures: the fake outside world (Evolution, Gemini), fakeredis, and real redis-server and bot processes."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import fakeredis
import pytest
import redis as redis_lib
import requests
from rq import Queue, Worker

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = Path(__file__).resolve().parent / "payloads"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from config import load_settings  # noqa: E402
from fakes import FakeEvolution, FakeGemini, FakeGraph, FakeTwilio  # noqa: E402

EVOLUTION_KEY = "test-evolution-key"
GEMINI_KEY = "test-gemini-key"
TOKEN = "test-webhook-token"
PANEL_KEY = "test-panel-secret-key-0123456789abcdef"
INSTANCE = "shop"
CUSTOMER = "5511999994321"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.05, message="condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def load_payload(name):
    return json.loads((PAYLOADS / name).read_text())


def text_message(text, message_id, number=CUSTOMER, instance=INSTANCE, timestamp=None, from_me=False):
    """A v2 `messages.upsert` body shaped like payload 01 (plain `conversation` text)."""
    return {
        "event": "messages.upsert",
        "instance": instance,
        "data": {
            "key": {"remoteJid": f"{number}@s.whatsapp.net", "fromMe": from_me, "id": message_id},
            "pushName": "Cliente",
            "status": "DELIVERY_ACK",
            "message": {"conversation": text},
            "messageType": "conversation",
            "messageTimestamp": int(timestamp or time.time()),
            "instanceId": "f86c8b02-29df-4de1-ac9d-1e8c78d7475c",
            "source": "android",
        },
        "destination": "http://webhook:8000/webhook",
        "date_time": "2026-11-23T12:00:00.000Z",
        "sender": "5511999990000@s.whatsapp.net",
        "server_url": "http://localhost:8080",
        "apikey": "FFFFFFFFFFFF-FFFF-FFFF-FFFFFFFFFFFF",
    }


def seed_chats(redis, settings, count, name=lambda i: f"Cliente {i}", text=lambda i: f"oi {i}", instance=INSTANCE):
    """`count` chats, one customer message each, written as the webhook writes them (buffer.add_message), a
    second apart, newest last, none left waiting for the bot. Returns their chat ids in that order."""
    import buffer
    import parser

    start, later = int(time.time()) - count, time.time() + 600  # due only later: out of the schedule before any job
    cids = []
    for i in range(count):
        number = f"55119{i:08d}"
        body = text_message(text(i), f"SEED{i}", number=number, instance=instance, timestamp=start + i)
        body["data"]["pushName"] = name(i)
        message, = parser.parse_body(body)
        buffer.add_message(redis, message, settings, now=later)
        cids.append(buffer.chat_ref(instance, f"{number}@s.whatsapp.net"))
    redis.delete(buffer.DUE)
    return cids


@pytest.fixture
def evolution():
    fake = FakeEvolution(api_key=EVOLUTION_KEY, instances={INSTANCE, "Ivo Teste", "loja2"}, time_scale=0)
    fake.start()
    yield fake
    fake.stop()


PHONE_NUMBER_ID = "106540352242922"  # the Cloud API's "instance" (Meta's documentation's example id)
GRAPH_TOKEN = "test-graph-token-0123456789"
TWILIO_NUMBER = "+5511999990000"


@pytest.fixture
def graph():
    fake = FakeGraph(token=GRAPH_TOKEN, phone_number_ids=[PHONE_NUMBER_ID])
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def twilio_api():
    fake = FakeTwilio(auth_token="test-twilio-token-0123456789", senders=[TWILIO_NUMBER])
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def gemini():
    fake = FakeGemini(api_key=GEMINI_KEY)
    fake.start()
    yield fake
    fake.release()
    fake.stop()


@pytest.fixture
def bot_env(evolution, gemini, tmp_path):
    """Environment for the bot pointed at the fakes; tests add or override entries."""
    return {
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "EVOLUTION_API_URL": evolution.url,
        "EVOLUTION_API_KEY": EVOLUTION_KEY,
        "EVOLUTION_INSTANCE": INSTANCE,
        "GEMINI_API_KEY": GEMINI_KEY,
        "GEMINI_BASE_URL": gemini.url,
        "GEMINI_TIMEOUT_SECONDS": "5",
        "EVOLUTION_TIMEOUT_SECONDS": "10",
        "WEBHOOK_TOKEN": TOKEN,
        "PANEL_SECRET_KEY": PANEL_KEY,
        "DEBOUNCE_SECONDS": "1",
        "SYSTEM_PROMPT_FILE": str(ROOT / "prompts" / "system.md"),
        "SEND_PRESENCE": "false",
        "TIME_PER_CHAR_MS": "0",
        "RETRY_BASE_SECONDS": "0.2",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture
def prompts(tmp_path):
    """A prompts/ folder of the test's own, with the shipped persona: what the panel writes lands here."""
    folder = tmp_path / "prompts"
    folder.mkdir()
    shutil.copy(ROOT / "prompts" / "system.md", folder / "system.md")
    return folder


@pytest.fixture
def make_settings(bot_env):
    """Settings from `bot_env` plus keyword overrides (names as environment variables)."""

    def make(**overrides):
        env = {**bot_env, **{k.upper(): str(v) for k, v in overrides.items()}}
        return load_settings(env, require=())

    return make


@pytest.fixture
def fake_redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def queue(fake_redis):
    return Queue("whatsapp", connection=fake_redis)


class RedisServer:
    """A real redis-server on a free loopback port with AOF on, in a temp dir; can be stopped and restarted.

    `extra_args` are more redis-server options, e.g. ("--maxmemory", "1mb").
    """

    def __init__(self, directory, extra_args=()):
        self.directory = directory
        self.extra_args = tuple(extra_args)
        self.port = free_port()
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--enable-debug-command", "local", *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis_lib.Redis(port=self.port)
        wait_until(lambda: _pings(client), timeout=10, message="redis-server to start")
        return self

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self, down_seconds=0.0):
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def client(self):
        return redis_lib.Redis.from_url(self.url)


def _pings(client):
    try:
        return client.ping()
    except redis_lib.RedisError:
        return False


@pytest.fixture
def redis_server(tmp_path):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: run `bash .ci/run`, which installs it")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


class BotProcess:
    """One real bot process (`python worker.py` or `gunicorn webhook:app`) in its own process group."""

    def __init__(self, args, env, log_path):
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.args, cwd=ROOT, env={**os.environ, **self.env}, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self, sig=signal.SIGKILL):
        """Signal the process and all its descendants, as stopping its container would.

        RQ's forked job runs in a session of its own, so a process-group kill would miss it.
        """
        if self.process and self.process.poll() is None:
            for pid in [self.process.pid, *_descendants(self.process.pid)]:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def stop(self):
        self.kill(signal.SIGTERM)
        if self.process:
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.process.wait(timeout=5)
        self.log.close()

    def output(self):
        return Path(self.log_path).read_text(errors="replace")


def _descendants(pid):
    """Every live descendant of `pid`, read from /proc."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture
def processes(tmp_path):
    """Start bot processes; all are stopped at the end of the test, and their logs shown on failure."""
    started = []

    def start(kind, env, name=None):
        name = name or f"{kind}{len(started)}"
        if kind == "worker":
            args = [sys.executable, "worker.py"]
        else:
            port = env["PORT"]
            args = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
                    env.get("GUNICORN_WORKERS", "2"), "--threads", "4", "webhook:app"]
        proc = BotProcess(args, env, tmp_path / f"{name}.log").start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
    for proc in started:
        print(f"----- {proc.log_path.name} -----\n{proc.output()[-6000:]}")


class Stack:
    """A running bot: one webhook (gunicorn) and workers on a real Redis, with a helper to post to it."""

    def __init__(self, env, redis_server, processes):
        self.env = env
        self.redis = redis_server
        self.processes = processes
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self.webhook = processes("webhook", env)
        self.workers = [processes("worker", env)]
        wait_until(self.healthy, timeout=20, message="the webhook to answer /health")
        wait_until(lambda: Worker.all(connection=redis_server.client()), timeout=20, message="the worker to start")

    def healthy(self):
        try:
            return requests.get(f"{self.url}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def post(self, body, expect=200):
        response = requests.post(f"{self.url}/webhook", params={"token": TOKEN}, json=body, timeout=20)
        assert response.status_code == expect, response.text
        return response.json()

    def add_worker(self, **overrides):
        proc = self.processes("worker", {**self.env, **overrides})
        self.workers.append(proc)
        return proc


def panel_session(stack, password):
    """A logged-in `requests` session on a running stack's panel (PANEL_PASSWORD set), with its CSRF header."""
    import re

    session = requests.Session()
    page = session.get(f"{stack.url}/panel/login", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert session.post(f"{stack.url}/panel/login", data={"password": password, "csrf_token": token},
                        allow_redirects=False, timeout=10).status_code == 302
    session.headers["X-CSRF-Token"] = session.get(f"{stack.url}/panel/api/session", timeout=10).json()["csrf_token"]
    return session


@pytest.fixture
def start_stack(bot_env, redis_server, processes):
    """Start the bot on a real Redis with short recovery settings; keyword arguments override the environment."""

    def start(**overrides):
        env = {**bot_env, "REDIS_URL": redis_server.url, "PORT": str(free_port()), "SWEEP_SECONDS": "2",
               "JOB_LEASE_SECONDS": "20", **{k.upper(): str(v) for k, v in overrides.items()}}
        return Stack(env, redis_server, processes)

    return start


@pytest.fixture
def stack(start_stack):
    return start_stack()
