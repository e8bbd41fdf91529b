"""Shared plumbing for the benchmarks: real processes on loopback, cleaned up whatever happens.

Every benchmark script starts its own redis-server, `gunicorn webhook:app`, `python worker.py`
(each in its own process group) and the fake Gemini and Evolution servers from tests/fakes.py,
drives a bounded load, prints its figures, and stops everything on exit, on an error, on Ctrl-C,
on SIGTERM and when its time limit (SIGALRM) passes.

The benches are black-box: the bot's processes run from CODE, another checkout if asked
(`--code DIR` on any script, or BENCH_CODE=DIR; default: the repo this bench lives in), and are
observed only over HTTP, through the fakes and in Redis. What this process imports (the fakes,
tests/conftest.py helpers, buffer.chat_ref/keys) comes from the bench's own repo.
"""

import atexit
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"  # git-ignored: logs and JSON of the last runs
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _take_code_option(argv):
    """Remove `--code DIR` (or `--code=DIR`) from argv, so each script's own argparse never sees it."""
    for i, arg in enumerate(argv):
        if arg == "--code" and i + 1 < len(argv):
            value = argv[i + 1]
            del argv[i:i + 2]
            return value
        if arg.startswith("--code="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


# The checkout whose webhook.py and worker.py the bench runs (see the module docstring).
CODE = Path(_take_code_option(sys.argv) or os.environ.get("BENCH_CODE") or ROOT).resolve()
if not (CODE / "webhook.py").exists() or not (CODE / "worker.py").exists():
    sys.exit(f"--code {CODE}: no webhook.py/worker.py there")


def code_commit():
    """Short commit id of CODE (and '+dirty' if its work tree has changes), for the results."""
    try:
        head = subprocess.run(["git", "-C", str(CODE), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(CODE), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"

from conftest import free_port, text_message, wait_until  # noqa: E402  (shared with the tests)
from fakes import FakeEvolution, FakeGemini  # noqa: E402

import redis as redis_lib  # noqa: E402

EVOLUTION_KEY = "bench-evolution-key"
GEMINI_KEY = "bench-gemini-key"
TOKEN = "bench-webhook-token"
INSTANCE = "shop"
PYTHON = sys.executable
# The compose file's webhook command (docker-compose.yml) and the Dockerfile's: the same for the baseline.
GUNICORN_FLAGS = ["--workers", "2", "--threads", "4", "--timeout", "30", "--graceful-timeout", "20",
                  "--worker-tmp-dir", "/dev/shm"]


def chat_number(i):
    """The i-th bench customer's phone number (a valid BR mobile: 55 11 9xxxx xxxx)."""
    return f"55119{i:08d}"


# --------------------------------------------------------------------------------------------
# Process lifecycle: every child in its own process group, all of them killed on the way out
# --------------------------------------------------------------------------------------------

class Proc:
    def __init__(self, name, popen, log_path):
        self.name, self.popen, self.log_path = name, popen, log_path

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def output(self):
        return Path(self.log_path).read_text(errors="replace") if self.log_path else ""


_procs = []
_cleaned = False


def start(name, args, env=None, cwd=ROOT, log_dir=None, quiet=False):
    """Start `args` in a new session (its own process group); stdout+stderr go to a log file."""
    log_path = None
    if quiet:
        out = subprocess.DEVNULL
    else:
        log_dir = Path(log_dir or RESULTS / "logs")
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        out = open(log_path, "wb")
    popen = subprocess.Popen(args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    if out is not subprocess.DEVNULL:
        out.close()
    proc = Proc(name, popen, log_path)
    _procs.append(proc)
    return proc


def stop(proc, timeout=15):
    """SIGTERM to the whole group (worker's forked job horse and scheduler too), then SIGKILL."""
    if proc.alive():
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # leftovers of the group (a job horse whose parent already exited)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.popen.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if proc in _procs:
        _procs.remove(proc)


def cleanup():
    """Stop every process this script started, newest first. Safe to call twice."""
    global _cleaned
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for proc in reversed(list(_procs)):
        stop(proc, timeout=10)
    for fake in list(_fakes):
        try:
            fake.stop()
        except Exception:
            pass
    _fakes.clear()
    for path in list(_tmpdirs):
        shutil.rmtree(path, ignore_errors=True)
    _tmpdirs.clear()
    _cleaned = True


class BenchTimeout(Exception):
    pass


def _on_signal(signum, _frame):
    if signum == signal.SIGALRM:
        raise BenchTimeout("time limit reached")
    raise KeyboardInterrupt(f"signal {signum}")


def install(time_limit=175):
    """Call first in every script: cleanup on exit and signals, and a hard time limit."""
    atexit.register(cleanup)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(sig, _on_signal)
    signal.alarm(int(time_limit))
    RESULTS.mkdir(parents=True, exist_ok=True)


def main(body, time_limit=175):
    """Run `body()` with cleanup; exit 1 on failure, 130 on interruption."""
    install(time_limit)
    try:
        body()
    except KeyboardInterrupt as error:
        print(f"\ninterrupted ({error}); stopping processes", file=sys.stderr)
        cleanup()
        sys.exit(130)
    except BenchTimeout:
        print("\nbench time limit reached; stopping processes", file=sys.stderr)
        cleanup()
        sys.exit(2)
    finally:
        signal.alarm(0)
        cleanup()


_tmpdirs = []
_fakes = []


def tmpdir():
    path = Path(tempfile.mkdtemp(prefix="wa-bench-"))
    _tmpdirs.append(path)
    return path


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------

def redis_pid():
    return next(p.pid for p in _procs if p.name == "redis")


def start_redis(name="redis"):
    """A redis-server as the compose file runs it: AOF on, fsync every second, no RDB snapshots."""
    directory = tmpdir()
    port = free_port()
    start(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                 "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no"],
          quiet=True)
    client = redis_lib.Redis(port=port)

    def pings():
        try:
            return client.ping()
        except redis_lib.RedisError:
            return False

    wait_until(pings, 10, message="redis-server")
    return f"redis://127.0.0.1:{port}/0", client


def start_fakes(gemini_responder=None, typing_time_scale=0.0):
    """FakeGemini and FakeEvolution on loopback, in this process (threads)."""
    evolution = FakeEvolution(api_key=EVOLUTION_KEY, instances={INSTANCE}, time_scale=typing_time_scale)
    gemini = FakeGemini(api_key=GEMINI_KEY)
    if gemini_responder:
        gemini.responder = gemini_responder
    evolution.start()
    gemini.start()
    _fakes.extend([evolution, gemini])
    return evolution, gemini


def bot_env(redis_url, evolution_url, gemini_url, **overrides):
    """The bot's environment; defaults are the bot's own except where said (names as env variables)."""
    env = {
        "REDIS_URL": redis_url,
        "EVOLUTION_API_URL": evolution_url or "http://127.0.0.1:9",
        "EVOLUTION_API_KEY": EVOLUTION_KEY,
        "EVOLUTION_INSTANCE": INSTANCE,
        "GEMINI_API_KEY": GEMINI_KEY,
        "GEMINI_BASE_URL": gemini_url or "http://127.0.0.1:9",
        "WEBHOOK_TOKEN": TOKEN,
        "SYSTEM_PROMPT_FILE": str(CODE / "prompts" / "system.md"),
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        # No ceilings a load test would hit: the bot's Gemini calls per hour (600 by default: past it a
        # chat gets the fallback, not Gemini) and messages per chat per hour.
        "GEMINI_MAX_CALLS_PER_HOUR": "0",
        "RATE_LIMIT_PER_HOUR": "1000000",
    }
    env.update({k.upper(): str(v) for k, v in overrides.items()})
    return env


def start_gunicorn(name, app, env, cwd=CODE, flags=GUNICORN_FLAGS):
    """`gunicorn <app>` with the compose flags on a free port; returns (proc, port) once /health answers."""
    port = free_port()
    proc = start(name, [PYTHON, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *flags, app], env=env, cwd=cwd)

    def healthy():
        if not proc.alive():
            raise RuntimeError(f"{name} exited:\n{proc.output()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False

    wait_until(healthy, 30, 0.1, message=f"{name} /health")
    return proc, port


def start_webhook(env, name="webhook"):
    return start_gunicorn(name, "webhook:app", env)


def start_baseline(redis_url, name="baseline"):
    return start_gunicorn(name, "baseline_app:app", {"REDIS_URL": redis_url}, cwd=BENCH)


def start_worker(env, name="worker"):
    """`python worker.py` of CODE."""
    return start(name, [PYTHON, "worker.py"], env=env, cwd=CODE)


def rq_worker_stats(client):
    """Per RQ worker: name, successful and failed job counts and total working time (s), from `rq:worker:<name>`.

    RQ adds each job's duration (started -> ended) to `total_working_time`, so a job that sleeps or
    waits for Evolution's typing shows up there. Read before the workers stop (their hash then expires).
    """
    out = []
    for name in sorted(client.smembers("rq:workers")):
        data = {k.decode(): v.decode() for k, v in client.hgetall(name).items()}
        if not data:
            continue
        out.append({"name": name.decode(), "successful": int(data.get("successful_job_count") or 0),
                    "failed": int(data.get("failed_job_count") or 0),
                    "working_s": float(data.get("total_working_time") or 0)})
    return out


def wait_workers(client, count, timeout=40):
    """Until `count` RQ workers have registered (they are ready to take jobs): members of `rq:workers`."""
    return wait_until(lambda: client.scard("rq:workers") >= count, timeout, 0.1,
                      message=f"{count} RQ worker(s) to register")


def proc_stats():
    """(pid, fields after the command name) of every live process, from /proc/<pid>/stat."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                yield int(entry), f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue


def children(pid):
    """Direct children of `pid`."""
    return [child for child, fields in proc_stats() if int(fields[1]) == pid]


def memory_kb(pid):
    """(RSS, PSS) of one process in KiB, from /proc/<pid>/smaps_rollup."""
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                m = re.match(r"^(Rss|Pss):\s+(\d+) kB", line)
                if m:
                    values[m.group(1)] = int(m.group(2))
    except OSError:
        return 0, 0
    return values.get("Rss", 0), values.get("Pss", 0)


def cpu_seconds(pid):
    """User+system CPU seconds of one process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------

WRK_SCRIPT = BENCH / "wrk_upsert.lua"


def upsert_template():
    """A text_message body with %s holes for number, message id and timestamp (for wrk's Lua)."""
    body = text_message("Oi, qual o preço do bolo de chocolate? Vocês entregam hoje?", "@@ID@@",
                        number="@@NUM@@", instance=INSTANCE, timestamp=1)
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    text = text.replace('"messageTimestamp":1', '"messageTimestamp":@@TS@@')
    assert "@@TS@@" in text
    return text.replace("%", "%%").replace("@@NUM@@", "%s").replace("@@ID@@", "%s").replace("@@TS@@", "%d")


def run_wrk(port, seconds, chats, run_id, path=None, connections=8, threads=1, chat_base=0, per_chat=1):
    """Closed-loop maximum throughput with wrk: every request a new message id, over `chats` chats.

    Returns requests/s, latency percentiles (ms) and non-2xx count, parsed from wrk's output.
    """
    path = path or f"/webhook?token={TOKEN}"
    template = upsert_template()
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s",
            str(WRK_SCRIPT), f"http://127.0.0.1:{port}", "--", path, str(chats), run_id, str(chat_base), str(per_chat)]
    env = {"WRK_TEMPLATE": template}
    proc = start(f"wrk-{run_id}", args, env=env)
    try:
        proc.popen.wait(timeout=seconds + 30)
    finally:
        stop(proc)
    out = proc.output()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk failed:\n{out}")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    pct = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    return {"rps": float(m.group(1)), "requests": total, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else "", "p50_ms": pct.get("50"), "p99_ms": pct.get("99"),
            "connections": connections}


def wrk_measured(port, app_proc, redis_pid, seconds, chats, run_id, **kw):
    """run_wrk, plus CPU ms per request of the app's gunicorn workers and of redis-server, and the
    machine's background load (other sessions' CPU) during the run."""
    workers = children(app_proc.pid)
    pids = workers + [redis_pid]
    cpu0 = {p: cpu_seconds(p) for p in pids}
    watch = CpuWatch()
    res = run_wrk(port, seconds, chats, run_id, **kw)
    res.update(watch.stop())
    cpu1 = {p: cpu_seconds(p) for p in pids}
    n = max(res["requests"], 1)
    res["app_cpu_ms"] = sum(cpu1[p] - cpu0[p] for p in workers) * 1000 / n
    res["redis_cpu_ms"] = (cpu1[redis_pid] - cpu0[redis_pid]) * 1000 / n
    res["cpu_ms"] = res["app_cpu_ms"] + res["redis_cpu_ms"]
    return res


def _ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


class OpenLoop:
    """Steady-rate load: request i is due at t0 + i/rate, whatever the server's speed (no coordinated omission).

    `conns` client threads each keep one HTTP/1.1 connection and take every conns-th slot; latency
    is measured from the slot's due time, so a slow answer shows up in the latency of those behind it.
    """

    def __init__(self, port, rate, seconds, make_body, conns=8, path=None):
        self.port, self.rate, self.seconds, self.make_body, self.conns = port, rate, seconds, make_body, conns
        self.path = path or f"/webhook?token={TOKEN}"
        self.latencies = []  # (slot index, ms from due time, ms from actual send)
        self.statuses = {}
        self.lock = threading.Lock()

    def run(self):
        total = int(self.rate * self.seconds)
        t0 = time.perf_counter() + 0.2
        threads = [threading.Thread(target=self._client, args=(j, total, t0), daemon=True) for j in range(self.conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.seconds + 60)
        return self

    def _client(self, j, total, t0):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "application/json"}
        for i in range(j, total, self.conns):
            due = t0 + i / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            body = self.make_body(i)
            sent = time.perf_counter()
            try:
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                status = "error"
            done = time.perf_counter()
            with self.lock:
                self.latencies.append((i, (done - due) * 1000, (done - sent) * 1000))
                self.statuses[status] = self.statuses.get(status, 0) + 1
        conn.close()

    def summary(self):
        from_due = sorted(lat for _, lat, _ in self.latencies)
        service = sorted(s for _, _, s in self.latencies)
        return {"rate": self.rate, "requests": len(from_due), "statuses": self.statuses,
                "p50_ms": pct(from_due, 50), "p99_ms": pct(from_due, 99), "max_ms": from_due[-1] if from_due else None,
                "service_p50_ms": pct(service, 50), "service_p99_ms": pct(service, 99)}


def pct(sorted_values, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def post(port, body, path=None):
    """One webhook POST (JSON body); returns (status, parsed answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        conn.request("POST", path or f"/webhook?token={TOKEN}", body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Chats and text
# --------------------------------------------------------------------------------------------

def chat_cid(number):
    """The bot's chat id (buffer.chat_ref, a stable API) of a bench customer's number."""
    import buffer

    return buffer.chat_ref(INSTANCE, f"{number}@s.whatsapp.net")


def post_on(conn, port, body, tries=1):
    """POST one body on a kept-alive connection, reconnecting when gunicorn closed it (idle 2 s).

    Returns (status or "error", the connection to use next, the time the successful POST started).
    """
    status, sent = "error", None
    for _ in range(tries):
        sent = time.time()
        try:
            conn.request("POST", f"/webhook?token={TOKEN}", body=json.dumps(body),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            return response.status, conn, sent
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    return status, conn, sent


def post_many(port, bodies, threads=8):
    """POST every body to the webhook from `threads` threads; returns {status: count}."""
    statuses, lock, queue = {}, threading.Lock(), list(reversed(bodies))

    def run():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                if not queue:
                    break
                body = queue.pop()
            status, conn, _ = post_on(conn, port, body)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return statuses


def converse(port, evolution, numbers, exchanges, text_for, prefix="M", echoes=False):
    """Each number (one thread each) writes `exchanges` messages, `text_for(i, k)`, waiting for the
    bot's reply to each before the next, as a customer would; returns the errors met. Message ids
    are `{prefix}{i}_{k}`. With `echoes`, each message the bot sent comes back as Evolution's
    `send.message` event, as compose configures it (WEBHOOK_EVENTS_SEND_MESSAGE)."""
    errors = []

    def talk(i, number):
        try:
            echoed = 0
            for k in range(exchanges):
                status, _ = post(port, text_message(text_for(i, k), f"{prefix}{i}_{k}", number=number, instance=INSTANCE))
                assert status == 200, status
                wait_until(lambda: sum(1 for _, n, _ in evolution.sent_texts() if n == number) >= k + 1, 30, 0.05,
                           message=f"chat {i} reply {k + 1}")
                if echoes:
                    sent = [m for m in evolution.sent_messages() if m["key"]["remoteJid"].startswith(number)]
                    for message in sent[echoed:]:
                        status, answer = post(port, send_message_event(message))
                        assert status == 200 and answer["results"] == ["own"], answer
                    echoed = len(sent)
        except Exception as error:  # noqa: BLE001 (reported by the caller)
            errors.append(f"chat {i}: {error}")

    threads = [threading.Thread(target=talk, args=(i, n), daemon=True) for i, n in enumerate(numbers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def send_message_event(message):
    """Evolution's `send.message` webhook for one message its sendText answered (the shape of payload 65)."""
    return {"event": "send.message", "instance": INSTANCE, "data": message,
            "destination": "http://webhook:8000/webhook", "date_time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "sender": "5511999990000@s.whatsapp.net", "server_url": "http://localhost:8080",
            "apikey": "FFFFFFFFFFFF-FFFF-FFFF-FFFFFFFFFFFF"}


def sample_text(chars, seed=0):
    """Portuguese-looking text of exactly `chars` characters (some accented: 2 bytes in UTF-8)."""
    words = ("olá", "bom", "dia", "quero", "saber", "o", "preço", "do", "bolo", "de", "chocolate", "entrega",
             "amanhã", "à", "tarde", "você", "aceita", "pix", "obrigado", "tamanho", "médio", "com", "cobertura")
    rng = random.Random(seed)
    out = ""
    while len(out) < chars:
        out += rng.choice(words) + " "
    return out[:chars]


def my_sessions():
    return {os.getsid(0)} | {p.pid for p in _procs}


class CpuWatch:
    """Busy CPU of the whole machine vs. of this bench's own processes over an interval.

    Other work on the machine (another session's tests, say) steals CPU from a 2-core benchmark;
    `background_cores` says how much, so a low figure can be told from a slow bot.
    """

    def __init__(self):
        self.t0, self.busy0, self.mine0 = time.monotonic(), _machine_busy(), _session_cpu(my_sessions())

    def stop(self):
        wall = max(time.monotonic() - self.t0, 1e-6)
        busy = _machine_busy() - self.busy0
        mine = _session_cpu(my_sessions()) - self.mine0
        return {"wall_s": wall, "machine_busy_cores": busy / wall, "bench_cores": mine / wall,
                "background_cores": max(busy - mine, 0) / wall}


def _machine_busy():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _session_cpu(sessions):
    """CPU seconds of live processes in `sessions` (dead ones' time is lost: keep runs short and steady)."""
    ticks = sum(sum(int(x) for x in fields[11:15])  # utime, stime, and reaped children's
                for _, fields in proc_stats() if int(fields[3]) in sessions)
    return ticks / os.sysconf("SC_CLK_TCK")


def keys_without_ttl(client):
    """Every key with no expiry (TTL -1), grouped by pattern (ids replaced by *)."""
    groups = {}
    for key in client.scan_iter(count=1000):
        if client.ttl(key) == -1:
            name = key.decode()
            pattern = re.sub(r"[0-9a-f]{20}", "*", name)  # chat refs
            pattern = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "*", pattern)
            pattern = re.sub(r"[0-9a-f]{32}", "*", pattern)  # rq job ids and worker names
            groups[pattern] = groups.get(pattern, 0) + 1
    return dict(sorted(groups.items()))


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def table(rows, headers):
    """Plain text table."""
    cells = [[str(c) for c in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt(value):
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def save(name, data, figures=None):
    """Write bench/results/<name>.json: the script's data, plus `figures` ({key: number}) that run_all.py tabulates."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    meta = {"code": str(CODE), "commit": code_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    path.write_text(json.dumps({**meta, "figures": figures or {}, **data}, indent=2, default=str))
    return path


def baseline_figure(key):
    """(value, commit) of one figure in bench/baseline.json (the code before issue 14), or (None, None)."""
    try:
        data = json.loads((BENCH / "baseline.json").read_text())
    except (OSError, ValueError):
        return None, None
    return data.get("figures", {}).get(key), data.get("commit")


def median(values):
    return statistics.median(values) if values else None
