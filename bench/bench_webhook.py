"""Webhook throughput against its floor (bare Flask + one Redis SET), as the median of alternating runs.

    python bench/bench_webhook.py [--code DIR] [--pairs 5]      # about 2 minutes

Starts redis-server (AOF, fsync every second, as in docker-compose.yml), `gunicorn webhook:app`
and `gunicorn baseline_app:app` (bench/baseline_app.py: parse the JSON, one Redis SET: the floor)
with the same flags as the compose file (--workers 2 --threads 4). No worker runs: the webhook
only buffers. Load is wrk (closed loop, 8 connections), every request a new messages.upsert id:

* bursts of 3 per chat (1 new chat + 2 follow-ups: the usual case; the figure with a target),
* every message a new chat,
* follow-ups only, to 3,000 chats already waiting (posted through the webhook first).

The host is shared and its speed drifts, so each mix runs PAIRS pairs of short slices (SECONDS s
of the webhook, then SECONDS s of the floor) and the ratio is the median of the pairs' ratios;
every pair is printed. Accepted = 2xx answers. Then latency at a steady 300 msgs/s (open loop,
from each request's due time), bursts of 3, webhook and floor. Target: ratio >= 0.8.
"""

import argparse
import time

import common as c

SECONDS = 2
RATE = 300
LATENCY_SECONDS = 8
BIG = 10**7  # chat numbers never repeat within a run
WAITING = 3000


def body():
    cli = argparse.ArgumentParser()
    cli.add_argument("--pairs", type=int, default=5)
    pairs_n = cli.parse_args().pairs

    url, r = c.start_redis()
    redis_pid = c.redis_pid()
    evolution, gemini = c.start_fakes()
    env = c.bot_env(url, evolution.url, gemini.url)
    webhook, wport = c.start_webhook(env)
    base, bport = c.start_baseline(url)
    print(f"webhook ({c.CODE}) on :{wport}, floor on :{bport}, redis {url}", flush=True)

    for port in (wport, bport, wport, bport):  # warm up: imports, pools, Lua script cache, allocator
        c.run_wrk(port, 2, BIG, f"warm{port}", per_chat=3)

    counter = [0]

    def slice_(proc, port, per_chat, seeded):
        counter[0] += 1
        chat_base = 50_000_000 if seeded else counter[0] * BIG
        res = c.wrk_measured(port, proc, redis_pid, SECONDS, seeded or BIG, f"R{counter[0]}",
                             chat_base=chat_base, per_chat=per_chat)
        res["accepted_per_s"] = res["rps"] * (res["requests"] - res["non2xx"]) / max(res["requests"], 1)
        return res

    mixes = [("bursts of 3 (1 new + 2 follow-ups)", "bursts", 3, 0),
             ("every message a new chat", "new", 1, 0),
             ("follow-ups to 3,000 waiting chats", "followups", 1, WAITING)]
    results = {}
    for title, key, per_chat, seeded in mixes:
        time.sleep(0.5)  # requests still in flight land before the flush
        r.flushall()
        if seeded:
            bodies = [c.text_message("oi, bom dia", f"W{i}", number=c.chat_number(50_000_000 + i), instance=c.INSTANCE)
                      for i in range(seeded)]
            statuses = c.post_many(wport, bodies)
            print(f"  {seeded} chats now waiting (posted: {statuses})", flush=True)
        print(f"  {title}: {pairs_n} pairs of {SECONDS}-s slices, webhook then floor", flush=True)
        pairs = []
        for i in range(pairs_n):
            m = slice_(webhook, wport, per_chat, seeded)
            b = slice_(base, bport, 1, 0)
            ratio = m["accepted_per_s"] / b["accepted_per_s"]
            pairs.append({"webhook": m, "floor": b, "ratio": ratio})
            print(f"    pair {i + 1}: webhook {m['accepted_per_s']:5.0f} msgs/s ({m['non2xx']} non-2xx), floor "
                  f"{b['accepted_per_s']:5.0f} msgs/s = {ratio:.2f}x; CPU/msg {m['cpu_ms']:.2f} vs {b['cpu_ms']:.2f} ms;"
                  f" background {max(m['background_cores'], b['background_cores']):.2f} cores", flush=True)
        ratios = [p["ratio"] for p in pairs]
        results[key] = {"title": title, "pairs": pairs, "ratios": ratios, "median": c.median(ratios),
                        "webhook_msgs_s": c.median([p["webhook"]["accepted_per_s"] for p in pairs]),
                        "floor_msgs_s": c.median([p["floor"]["accepted_per_s"] for p in pairs])}

    template = c.upsert_template()

    def burst_body(tag):
        return lambda i: (template % (c.chat_number(60_000_000 + i // 3), f"{tag}{i}", int(time.time()))).encode()

    latency = {}
    for name, port in (("webhook", wport), ("floor", bport)):
        r.flushall()
        load = c.OpenLoop(port, RATE, LATENCY_SECONDS, burst_body(f"L{name}"), conns=8).run()
        latency[name] = load.summary()

    print()
    print("Webhook accepted msgs/s vs the floor (bare Flask + 1 SET), median of alternating pairs; target >= 0.8x")
    print(c.table([[v["title"], round(v["webhook_msgs_s"]), round(v["floor_msgs_s"]),
                    " ".join(f"{x:.2f}" for x in v["ratios"]), f"{v['median']:.2f}x"] for v in results.values()],
                  ["mix", "webhook msgs/s", "floor msgs/s", "pair ratios", "median ratio"]))
    print()
    print(f"Latency at a steady {RATE} msgs/s for {LATENCY_SECONDS} s (bursts of 3, from each request's due time)")
    print(c.table([[n, s["requests"], s["statuses"], f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}"]
                   for n, s in latency.items()], ["app", "requests", "statuses", "p50 ms", "p99 ms"]))
    figures = {"webhook_ratio_bursts": results["bursts"]["median"], "webhook_ratio_new": results["new"]["median"],
               "webhook_ratio_followups": results["followups"]["median"],
               "webhook_p99_ms_300": latency["webhook"]["p99_ms"]}
    c.save("webhook", {"mixes": results, "latency": latency}, figures)


if __name__ == "__main__":
    c.main(body, time_limit=175)
