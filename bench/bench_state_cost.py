"""Cost does not grow with the work: webhook msgs/s with 10 vs 10,000 chats waiting, and with history.

    python bench/bench_state_cost.py          # about 100 s

Same stack and load as bench_webhook.py (wrk, 8 connections, bursts of 3 messages per chat over
3,000 chats, `gunicorn webhook:app --workers 2 --threads 4`, no worker running so nothing drains).
Before each run Redis is flushed and seeded, through the bot's own buffer.add_message, with:

* 10 other chats waiting (a burst each, in wa:due, and their RQ jobs in rq:scheduled:whatsapp);
* 10,000 other chats waiting;
* 10,000 other chats waiting, and every chat the load writes to already has a full history
  (HISTORY_MAX_TURNS=20 exchanges of 200 characters each way).

The three scenarios alternate for ROUNDS rounds; medians are compared. Target: within 10 %.
Two figures per scenario: msgs/s (what the issue asks; on a shared 2-core machine it moves with
other processes' load, printed as "background") and CPU milliseconds per message of the webhook's
gunicorn workers plus redis-server (the cost itself, which background load hardly moves).
"""

import common as c

SECONDS = 8
ROUNDS = 3
LOAD_CHATS = 3000
LOAD_BASE = 20_000_000


def body():
    url, r = c.start_redis()
    evolution, gemini = c.start_fakes()
    env = c.bot_env(url, evolution.url, gemini.url)
    settings = c.settings_for(env)
    webhook, port = c.start_webhook(env)
    c.run_wrk(port, 2, 10**7, "warm", per_chat=3)  # imports, pools, script cache

    numbers = [c.chat_number(LOAD_BASE + i) for i in range(LOAD_CHATS)]
    scenarios = [("10 chats waiting", 10, False), ("10,000 chats waiting", 10_000, False),
                 ("10,000 waiting + 20-turn history", 10_000, True)]
    runs = {name: [] for name, *_ in scenarios}
    for round_no in range(ROUNDS):
        for k, (name, waiting, history) in enumerate(scenarios):
            r.flushall()
            c.seed_waiting(r, settings, waiting, offset=1_000_000)
            if history:
                c.seed_history(r, settings, numbers)
            state = {"wa:due": r.zcard("wa:due"), "rq:scheduled": r.zcard("rq:scheduled:whatsapp"),
                     "keys": r.dbsize()}
            res = c.wrk_measured(port, webhook, c.redis_pid(), SECONDS, LOAD_CHATS, f"S{round_no}{k}",
                                 chat_base=LOAD_BASE, per_chat=3)
            res["state"] = state
            runs[name].append(res)
            print(f"  round {round_no + 1} {name} ({state}): {res['rps']:.0f} msgs/s, p99 {res['p99_ms']:.1f} ms,"
                  f" CPU {res['cpu_ms']:.2f} ms/msg, background load {res['background_cores']:.2f} cores", flush=True)

    med = {name: {k: c.median([x[k] for x in rs]) for k in ("rps", "cpu_ms", "p99_ms", "background_cores")}
           for name, rs in runs.items()}
    first = med[scenarios[0][0]]
    rows = [[name, round(m["rps"]), f"{(m['rps'] / first['rps'] - 1) * 100:+.1f} %", f"{m['cpu_ms']:.2f}",
             f"{(m['cpu_ms'] / first['cpu_ms'] - 1) * 100:+.1f} %", f"{m['p99_ms']:.1f}", f"{m['background_cores']:.2f}"]
            for name, m in med.items()]
    rate_spread = max(abs(m["rps"] / first["rps"] - 1) for m in med.values())
    cpu_spread = max(abs(m["cpu_ms"] / first["cpu_ms"] - 1) for m in med.values())
    print()
    print("Webhook cost by state already in Redis (median of rounds); target: within 10 %")
    print(c.table(rows, ["state", "msgs/s", "change", "CPU ms/msg", "change", "p99 ms", "background cores"]))
    summary = [c.summary_row(
        "Webhook cost with 10 vs 10,000 chats waiting, and with 20-turn histories", "within 10 %",
        " / ".join(f"{round(m['rps'])}" for m in med.values()) + f" msgs/s (max change {rate_spread * 100:.0f} %); "
        + " / ".join(f"{m['cpu_ms']:.2f}" for m in med.values()) + f" CPU ms/msg (max change {cpu_spread * 100:.0f} %)",
        cpu_spread <= 0.10, command="python bench/bench_state_cost.py")]
    c.save("state_cost", {"runs": runs, "median": med, "summary": summary})


if __name__ == "__main__":
    c.main(body, time_limit=175)
