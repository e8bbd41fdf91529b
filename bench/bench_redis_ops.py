"""Redis work per message on the webhook path (and per reply on the worker path): commands and round trips.

    python bench/bench_redis_ops.py [--code DIR]     # about 40 s

Real redis-server and `gunicorn webhook:app`; INFO (commandstats and stats) is read before and
after N messages posted one at a time, so nothing else talks to Redis meanwhile (no worker runs
during the webhook part). Round trips are redis-server's `total_reads_processed`: one read event
per request the client sends (a pipeline or a Lua script is one). Then `redis-cli MONITOR` shows
the commands of one message of each kind. Target: <= 2 round trips per accepted message.

The worker part restarts the webhook with DEBOUNCE_SECONDS=0.5 beside one `python worker.py`,
measures their idle Redis traffic (heartbeats, polling) for a few seconds, posts one message to
each of 50 new chats and waits for the 50 replies; less the idle rate and the webhook's own
round trips measured above, that is an estimate of the Redis work per reply, for sizing Redis.
"""

import re
import time

import common as c

N = 200


def snapshot(r):
    info = r.info("all")
    calls = {k[len("cmdstat_"):]: v["calls"] for k, v in info.items() if k.startswith("cmdstat_")}
    return {"reads": info["total_reads_processed"], "commands": info["total_commands_processed"], "calls": calls}


def delta(a, b, own_info=1):
    """Per-command calls, commands and reads between two snapshots, less the INFO call(s) of `b`."""
    calls = {k: v - a["calls"].get(k, 0) for k, v in b["calls"].items() if v - a["calls"].get(k, 0)}
    calls["info"] = calls.get("info", 0) - own_info
    if not calls["info"]:
        del calls["info"]
    return {"reads": b["reads"] - a["reads"] - own_info, "commands": b["commands"] - a["commands"] - own_info,
            "calls": calls}


def monitor_one(port, r, url, action):
    """Commands Redis sees while `action()` runs (redis-cli MONITOR, in its own process group)."""
    log_dir = c.tmpdir()
    proc = c.start("monitor", ["redis-cli", "-p", str(r.connection_pool.connection_kwargs["port"]), "monitor"],
                   log_dir=log_dir)
    time.sleep(0.5)
    action()
    time.sleep(0.5)
    c.stop(proc)
    lines = []
    for line in proc.output().splitlines():
        m = re.match(r"^[\d.]+ \[(\d+ )?([^\]]+)\] (.*)$", line)
        if not m:
            continue
        who = "  lua" if m.group(2) == "lua" else "call"
        args = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(3))
        if not args:
            continue
        shown = [a if len(a) <= 40 else a[:37] + "..." for a in args[:4]]
        lines.append(f"{who}  {' '.join(shown)}{' ...' if len(args) > 4 else ''}")
    return lines


def body():
    url, r = c.start_redis()
    evolution, gemini = c.start_fakes(gemini_responder=lambda _: "Oi! Posso ajudar?")
    env = c.bot_env(url, evolution.url, gemini.url)
    webhook, port = c.start_webhook(env)
    for i in range(10):  # warm up both gunicorn workers: connections, Lua script cache
        c.post(port, c.text_message("oi", f"WARM{i}", number=c.chat_number(900 + i)))

    results = {}

    def measure(name, bodies):
        before = snapshot(r)
        outcomes = {}
        for b in bodies:
            status, answer = c.post(port, b)
            for outcome in answer.get("results", []) if isinstance(answer, dict) else []:
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        d = delta(before, snapshot(r))
        n = len(bodies)
        results[name] = {"messages": n, "outcomes": outcomes, "round_trips": d["reads"] / n,
                         "commands": d["commands"] / n, "calls": {k: v / n for k, v in sorted(d["calls"].items())}}

    measure("new chat",
            [c.text_message("oi, bom dia", f"N{i}", number=c.chat_number(i)) for i in range(N)])
    measure("follow-up (chat already waiting)",
            [c.text_message("quanto custa?", f"F{i}", number=c.chat_number(i)) for i in range(N)])
    measure("duplicate delivery (same message id)",
            [c.text_message("quanto custa?", f"F{i}", number=c.chat_number(i)) for i in range(N)])

    rows = []
    for name, res in results.items():
        calls = ", ".join(f"{k} {v:g}" for k, v in res["calls"].items())
        rows.append([name, res["outcomes"], f"{res['round_trips']:.2f}", f"{res['commands']:.2f}", calls])
    print(f"Webhook: Redis work per message ({N} messages each, posted one at a time); target <= 2 round trips")
    print(c.table(rows, ["message", "outcomes", "round trips", "commands", "commands by name (incl. inside Lua)"]))

    trace_new = monitor_one(port, r, url, lambda: c.post(port, c.text_message("oi", "MON1", number=c.chat_number(5000))))
    trace_follow = monitor_one(port, r, url, lambda: c.post(port, c.text_message("e aí?", "MON2",
                                                                                   number=c.chat_number(5000))))
    print()
    print("MONITOR, one new-chat message ('call' = a request from the webhook, 'lua' = inside the script):")
    print("\n".join("    " + line for line in trace_new))
    print("MONITOR, one follow-up message:")
    print("\n".join("    " + line for line in trace_follow))

    # Worker side: Redis work per answered burst (idle traffic and the webhook's share subtracted).
    c.stop(webhook)
    env = {**env, "DEBOUNCE_SECONDS": "0.5"}
    webhook, port = c.start_webhook(env, name="webhook-fast")
    proc = c.start_worker(env, name="ops-worker")
    c.wait_workers(r, 1)
    time.sleep(2)
    a = snapshot(r)
    cpu_a = c.cpu_seconds(c.redis_pid())
    t0 = time.monotonic()
    time.sleep(4)
    idle = delta(a, snapshot(r))
    idle_s = time.monotonic() - t0
    idle_cpu = c.cpu_seconds(c.redis_pid()) - cpu_a
    jobs = 50
    before_sent = len(evolution.sent_texts())
    a = snapshot(r)
    cpu_a = c.cpu_seconds(c.redis_pid())
    t0 = time.monotonic()
    for i in range(jobs):
        c.post(port, c.text_message("oi, tudo bem?", f"J{i}", number=c.chat_number(300_000 + i)))
    c.wait_until(lambda: len(evolution.sent_texts()) - before_sent >= jobs, 60, 0.02, message="replies")
    time.sleep(1)  # the last reply's bookkeeping after sendText
    busy_s = time.monotonic() - t0
    busy = delta(a, snapshot(r))
    busy_cpu = c.cpu_seconds(c.redis_pid()) - cpu_a
    c.stop(proc)
    new_msg = results["new chat"]
    for name, calls in new_msg["calls"].items():  # the webhook's share of the commands
        busy["calls"][name] = busy["calls"].get(name, 0) - calls * jobs
    busy["reads"] -= new_msg["round_trips"] * jobs
    busy["commands"] -= new_msg["commands"] * jobs
    scale = busy_s / idle_s
    per_reply_reads = (busy["reads"] - idle["reads"] * scale) / jobs  # -1: the enqueue pipeline
    per_reply_cmds = (busy["commands"] - idle["commands"] * scale) / jobs
    per_reply_redis_ms = (busy_cpu - idle_cpu * scale) * 1000 / jobs
    by_name = {}
    for name, calls in busy["calls"].items():
        per = (calls - idle["calls"].get(name, 0) * scale) / jobs
        if per >= 0.5:
            by_name[name] = round(per, 1)
    worker_res = {"idle_reads_per_s": idle["reads"] / idle_s, "idle_commands_per_s": idle["commands"] / idle_s,
                  "round_trips_per_reply": per_reply_reads, "commands_per_reply": per_reply_cmds,
                  "commands_by_name": by_name, "redis_cpu_ms_per_reply": per_reply_redis_ms}
    print()
    print(f"Worker: Redis work per answered burst ({jobs} chats; idle traffic of "
          f"{worker_res['idle_reads_per_s']:.1f} round trips/s subtracted): about {per_reply_reads:.0f} round trips, "
          f"{per_reply_cmds:.0f} commands per reply (incl. RQ's bookkeeping; the webhook's share subtracted), "
          f"{per_reply_redis_ms:.1f} ms of redis-server CPU per reply")
    print("    by name (at least 0.5 per reply): " + ", ".join(f"{k} {v:g}" for k, v in sorted(by_name.items())))

    new = results["new chat"]
    follow = results["follow-up (chat already waiting)"]
    figures = {"round_trips_new": new["round_trips"], "round_trips_followup": follow["round_trips"],
               "commands_new": new["commands"], "commands_followup": follow["commands"],
               "worker_round_trips_per_reply": per_reply_reads}
    c.save("redis_ops", {"webhook": results, "monitor_new": trace_new, "monitor_follow": trace_follow,
                         "worker": worker_res}, figures)


if __name__ == "__main__":
    c.main(body, time_limit=175)
