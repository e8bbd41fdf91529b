"""Webhook throughput and latency, beside a bare Flask + Redis baseline measured in the same run.

    python bench/bench_webhook.py            # about 100 s

Starts redis-server (AOF, fsync every second, as in docker-compose.yml), `gunicorn webhook:app`
and `gunicorn baseline_app:app` (bench/baseline_app.py: parse the JSON, one Redis SET) with the
same flags as the compose file (--workers 2 --threads 4), and FakeGemini/FakeEvolution (idle: no
worker runs, the webhook only buffers). Load comes from a separate process:

* maximum throughput: wrk (closed loop, 8 connections = 2 workers x 4 threads), every request a
  new messages.upsert id (tests/conftest.py text_message body, `?token=`), in three mixes:
  bursts of 3 messages per chat (the first schedules an RQ job, two are buffered: the usual
  case), every message a new chat (each schedules a job: worst case), and follow-ups to chats
  already waiting (none schedules a job: what a one-round-trip webhook would cost);
* latency at a steady 300 messages/s (open loop, measured from each request's due time, so
  queueing shows), bursts of 3.

Each mix runs ROUNDS times, alternating with the baseline on a flushed Redis; the median is shown.
Accepted messages are counted from the webhook's own log lines (scheduled + buffered).
"""

import re
import time

import common as c

SECONDS = 8
ROUNDS = 2
RATE = 300
LATENCY_SECONDS = 10
BIG = 10**7  # chat numbers never repeat within a run


def accepted_since(proc, offset):
    """Outcomes the webhook logged after byte `offset` of its log."""
    text = c.Path(proc.log_path).read_bytes()[offset:].decode(errors="replace")
    counts = {}
    for outcome in re.findall(r" on \S+: (\w+)$", text, re.M):
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def log_size(proc):
    return c.Path(proc.log_path).stat().st_size


def cpu_of(pids):
    return {pid: c.cpu_seconds(pid) for pid in pids}


def body():
    url, r = c.start_redis()
    redis_pid = next(p.pid for p in c._procs if p.name == "redis")
    evolution, gemini = c.start_fakes()
    env = c.bot_env(url, evolution.url, gemini.url)
    settings = c.settings_for(env)
    webhook, wport = c.start_webhook(env)
    base, bport = c.start_baseline(url)
    print(f"webhook on :{wport}, baseline on :{bport}, redis {url}; wrk {SECONDS}s x {ROUNDS} rounds per mix")

    for port in (bport, wport):  # warm up: imports, connection pools, Lua script cache
        c.run_wrk(port, 2, BIG, "warm", per_chat=3)

    mixes = [
        ("baseline (parse JSON + 1 SET)", base, bport, dict(per_chat=1), 0),
        ("bot: bursts of 3 per chat", webhook, wport, dict(per_chat=3), 0),
        ("bot: every message a new chat", webhook, wport, dict(per_chat=1), 0),
        ("bot: follow-ups to waiting chats", webhook, wport, dict(per_chat=1), 3000),
    ]
    results = {name: [] for name, *_ in mixes}
    for round_no in range(ROUNDS):
        for name, proc, port, load, seed in mixes:
            r.flushall()
            chats, chat_base = BIG, (round_no + 1) * BIG
            if seed:
                chats, chat_base = seed, 50_000_000 + round_no * 100_000
                c.seed_waiting(r, settings, seed, offset=chat_base)
            workers = c.children(proc.pid)
            cpu0 = cpu_of(workers + [redis_pid])
            offset = log_size(webhook)
            res = c.run_wrk(port, SECONDS, chats, f"R{round_no}{len(results[name])}", chat_base=chat_base, **load)
            cpu1 = cpu_of(workers + [redis_pid])
            n = max(res["requests"], 1)
            res["app_cpu_ms"] = sum(cpu1[p] - cpu0[p] for p in workers) * 1000 / n
            res["redis_cpu_ms"] = (cpu1[redis_pid] - cpu0[redis_pid]) * 1000 / n
            if proc is webhook:
                res["outcomes"] = accepted_since(webhook, offset)
                res["accepted"] = res["outcomes"].get("scheduled", 0) + res["outcomes"].get("buffered", 0)
            else:
                res["accepted"] = res["requests"] - res["non2xx"]
            res["accepted_per_s"] = res["rps"] * res["accepted"] / n
            results[name].append(res)
            print(f"  round {round_no + 1} {name}: {res['rps']:.0f} req/s, accepted {res['accepted']}/{res['requests']}"
                  f" {res.get('outcomes', '')}, p99 {res['p99_ms']:.1f} ms, CPU/msg app {res['app_cpu_ms']:.2f} ms"
                  f" redis {res['redis_cpu_ms']:.3f} ms", flush=True)

    template = c.upsert_template()

    def burst_body(tag):
        return lambda i: (template % (c.chat_number(60_000_000 + i // 3), f"{tag}{i}", int(time.time()))).encode()

    latency = {}
    for name, port in (("baseline", bport), ("bot", wport)):
        r.flushall()
        load = c.OpenLoop(port, RATE, LATENCY_SECONDS, burst_body(f"L{name}"), conns=8).run()
        latency[name] = load.summary()
        print(f"  {RATE}/s for {LATENCY_SECONDS}s, {name}: {latency[name]}", flush=True)

    med = {name: {k: c.median([x[k] for x in runs]) for k in ("accepted_per_s", "rps", "p50_ms", "p99_ms",
                                                                "app_cpu_ms", "redis_cpu_ms")}
           for name, runs in results.items()}
    base_rate = med["baseline (parse JSON + 1 SET)"]["accepted_per_s"]
    rows = []
    for name, m in med.items():
        rows.append([name, round(m["accepted_per_s"]), f"{m['accepted_per_s'] / base_rate:.2f}x",
                     f"{m['p50_ms']:.1f} / {m['p99_ms']:.1f}", f"{m['app_cpu_ms']:.2f}", f"{m['redis_cpu_ms']:.3f}"])
    print()
    print("Maximum throughput (wrk, 8 connections, median of rounds); target: bot >= 0.8x baseline")
    print(c.table(rows, ["mix", "accepted msgs/s", "vs baseline", "p50 / p99 ms (closed loop)",
                         "app CPU ms/msg", "Redis CPU ms/msg"]))
    print()
    rows = []
    for name in ("baseline", "bot"):
        s = latency[name]
        rows.append([name, s["requests"], s["statuses"], f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}",
                     f"{s['max_ms']:.1f}", f"{s['service_p99_ms']:.1f}"])
    print(f"Latency at a steady {RATE} msgs/s for {LATENCY_SECONDS}s (bursts of 3; from each request's due time);"
          " target: bot p99 <= 20 ms")
    print(c.table(rows, ["app", "requests", "statuses", "p50 ms", "p99 ms", "max ms", "p99 ms (from send)"]))
    c.save("webhook", {"throughput": results, "median": med, "latency": latency})


if __name__ == "__main__":
    c.main(body, time_limit=175)
