"""Cost does not grow with the work: webhook msgs/s with 10 vs 10,000 chats waiting, and with history.

    python bench/bench_state_cost.py          # about 1.5 minutes

Three stacks side by side, each its own redis-server (AOF, fsync every second) and its own
`gunicorn webhook:app --workers 2 --threads 4`, no worker running so nothing drains. Before the
load, each Redis is seeded through the bot's own buffer.add_message with:

* A: 10 other chats waiting (a burst each, in wa:due, and their RQ jobs in rq:scheduled:whatsapp);
* B: 10,000 other chats waiting;
* C: 10,000 other chats waiting, and every chat the load writes to already has a full history
  (HISTORY_MAX_TURNS=20 exchanges of 200 characters each way).

Load: wrk as in bench_webhook.py (8 connections, bursts of 3 messages per chat over 3,000 chats).
The machine is shared and its speed drifts, so the stacks are loaded in turn, in short slices
(A, B, C, A, B, C, ...), and each B or C slice is compared with the A slices on either side of it;
the figure is the median of those ratios, for msgs/s and for CPU milliseconds per message
(gunicorn workers + redis-server). Redis's own microseconds per call of the webhook's Lua script
(EVALSHA) and of RQ's scheduling pipeline (EXEC), from INFO commandstats, show the state-dependent
part directly. Target: within 10 %.
"""

import common as c

SECONDS = 2
SLICES = 9
LOAD_CHATS = 3000
LOAD_BASE = 20_000_000


def body():
    evolution, gemini = c.start_fakes()
    numbers = [c.chat_number(LOAD_BASE + i) for i in range(LOAD_CHATS)]
    scenarios = [("A: 10 chats waiting", 10, False), ("B: 10,000 chats waiting", 10_000, False),
                 ("C: 10,000 waiting + 20-turn histories", 10_000, True)]
    stacks = []
    for name, waiting, history in scenarios:
        url, r = c.start_redis(f"redis-{name[0]}")
        env = c.bot_env(url, evolution.url, gemini.url)
        settings = c.settings_for(env)
        c.seed_waiting(r, settings, waiting, offset=1_000_000)
        if history:
            c.seed_history(r, settings, numbers)
        proc, port = c.start_gunicorn(f"webhook-{name[0]}", "webhook:app", env)
        redis_pid = c._procs[-2].pid  # the redis-server started just before this gunicorn
        state = {"wa:due": r.zcard("wa:due"), "rq:scheduled": r.zcard("rq:scheduled:whatsapp"), "keys": r.dbsize()}
        stacks.append({"name": name, "proc": proc, "port": port, "redis_pid": redis_pid, "state": state, "runs": [],
                       "url": url})
        print(f"  {name}: {state}", flush=True)
    for stack in stacks:  # warm up each: imports, pools, script cache
        c.run_wrk(stack["port"], 3, 10**7, f"warm{stack['port']}", per_chat=3)
    for stack in stacks:
        stack["client"] = c.redis_lib.Redis(port=int(stack["url"].rsplit(":", 1)[1].split("/")[0]))
        stack["client"].config_resetstat()  # Redis's own time per command, from here on

    k = 0
    for _ in range(SLICES):
        line = []
        for stack in stacks:
            k += 1
            res = c.wrk_measured(stack["port"], stack["proc"], stack["redis_pid"], SECONDS, LOAD_CHATS, f"S{k}",
                                 chat_base=LOAD_BASE, per_chat=3)
            stack["runs"].append(res)
            line.append(f"{res['rps']:5.0f} msgs/s {res['cpu_ms']:.2f} ms")
        print("    " + " | ".join(line), flush=True)

    for stack in stacks:
        stats = stack.pop("client").info("commandstats")
        stack["redis_usec"] = {name: stats.get(f"cmdstat_{name}", {}).get("usec_per_call") for name in ("evalsha", "exec")}
    a_runs = stacks[0]["runs"]
    rows, spreads = [], []
    for stack in stacks:
        rate_ratios, cpu_ratios = [], []
        for i, res in enumerate(stack["runs"]):
            neighbours = [a_runs[i]] + ([a_runs[i + 1]] if i + 1 < len(a_runs) else [])
            rate_ratios.append(res["rps"] / (sum(x["rps"] for x in neighbours) / len(neighbours)))
            cpu_ratios.append(res["cpu_ms"] / (sum(x["cpu_ms"] for x in neighbours) / len(neighbours)))
        stack["rate_ratio"] = c.median(rate_ratios)
        stack["cpu_ratio"] = c.median(cpu_ratios)
        stack["rps"] = c.median([x["rps"] for x in stack["runs"]])
        stack["cpu_ms"] = c.median([x["cpu_ms"] for x in stack["runs"]])
        stack["p99_ms"] = c.median([x["p99_ms"] for x in stack["runs"]])
        rows.append([stack["name"], stack["state"]["wa:due"], round(stack["rps"]),
                     f"{(stack['rate_ratio'] - 1) * 100:+.1f} %", f"{stack['cpu_ms']:.2f}",
                     f"{(stack['cpu_ratio'] - 1) * 100:+.1f} %", f"{stack['p99_ms']:.1f}",
                     f"{stack['redis_usec']['evalsha']:.1f} / {stack['redis_usec']['exec']:.1f}"])
        if stack is not stacks[0]:  # the cost is CPU per message; msgs/s moves with the shared host's speed
            spreads.append(abs(stack["cpu_ratio"] - 1))
    print()
    print(f"Webhook cost by state already in Redis (medians of {SLICES} slices of {SECONDS} s; change vs the A slices"
          " next to each slice); target: within 10 %")
    print(c.table(rows, ["state", "wa:due", "msgs/s", "msgs/s change", "CPU ms/msg", "CPU change", "p99 ms",
                         "Redis us/call: add script / RQ pipeline"]))
    spread = max(spreads)
    summary = [c.summary_row(
        "Webhook cost with 10 vs 10,000 chats waiting, and with 20-turn histories", "within 10 %",
        "msgs/s " + " / ".join(f"{s['rps']:.0f}" for s in stacks) + "; change B "
        f"{(stacks[1]['rate_ratio'] - 1) * 100:+.0f} %, C {(stacks[2]['rate_ratio'] - 1) * 100:+.0f} %; CPU/msg change B "
        f"{(stacks[1]['cpu_ratio'] - 1) * 100:+.0f} %, C {(stacks[2]['cpu_ratio'] - 1) * 100:+.0f} %; Redis us per add script "
        + " / ".join(f"{s['redis_usec']['evalsha']:.0f}" for s in stacks),
        spread <= 0.10, baseline=f"A: {stacks[0]['rps']:.0f} msgs/s, {stacks[0]['cpu_ms']:.2f} ms/msg",
        ratio=f"{stacks[1]['rate_ratio']:.2f}x / {stacks[2]['rate_ratio']:.2f}x",
        command="python bench/bench_state_cost.py")]
    c.save("state_cost", {"stacks": [{k: v for k, v in s.items() if k != "proc"} for s in stacks],
                          "summary": summary})


if __name__ == "__main__":
    c.main(body, time_limit=175)
