"""Debounce precision: how late each chat's Gemini call comes after its last message + DEBOUNCE_SECONDS.

    python bench/bench_debounce.py [--code DIR]               # 1,000 chats, two burst shapes: ~2.5 min
    python bench/bench_debounce.py --chats 50 --shapes pairs  # light load

The issue's case, scaled down in time: 1,000 chats start a burst over 20 s (50 new bursts a
second), DEBOUNCE_SECONDS=5, 2 `python worker.py` processes, FakeGemini answering at once, typing
off (TIME_PER_CHAR_MS=0, SEND_PRESENCE=false). Two burst shapes, one after the other, each on a
fresh redis-server, webhook and workers:

* pairs:  2 messages 0.3 s apart;
* spread: 3 messages, the gaps uniform in 0.5-3 s.

Messages go through the real `gunicorn webhook:app`; FakeGemini records when each chat's call
arrives, FakeEvolution each reply. Lateness = Gemini arrival - (send time of the chat's last
message + DEBOUNCE_SECONDS); the send time is taken just before the POST. EARLY = lateness < 0
(the bot answered before the window closed). Worker time per job comes from RQ's worker hashes
(`rq:worker:<name>`: total_working_time / successful_job_count): a job that sleeps shows there.
Target: p99 <= 0.5 s, none early, exactly 1 Gemini call and 1 reply per burst.
"""

import argparse
import heapq
import http.client
import random
import re
import threading
import time

import common as c

DEBOUNCE = 5.0
SPREAD = 20.0
SHAPES = {  # name: gaps between a burst's messages, drawn per burst
    "pairs": lambda rng: [0.3],
    "spread": lambda rng: [rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0)],
}


def run(shape, chats, workers, spread, seed=1):
    url, r = c.start_redis(f"redis-{shape}")
    arrivals, lock = {}, threading.Lock()

    def responder(request_json):
        text = request_json["contents"][-1]["parts"][-1].get("text", "")
        chat = int(re.search(r"cliente (\d+)", text).group(1))
        with lock:
            arrivals.setdefault(chat, []).append(time.time())
        return f"Oi cliente {chat}, tudo certo!"

    evolution, gemini = c.start_fakes(gemini_responder=responder)
    env = c.bot_env(url, evolution.url, gemini.url, debounce_seconds=DEBOUNCE, time_per_char_ms=0,
                    send_presence="false")
    webhook, port = c.start_webhook(env, name=f"webhook-{shape}")
    procs = [c.start_worker(env, name=f"worker{i}-{shape}") for i in range(workers)]
    c.wait_workers(r, workers)

    rng = random.Random(seed)
    plan, last_k = [], {}  # plan: (due offset, chat, index in burst)
    for chat in range(chats):
        t = rng.uniform(0, spread)
        gaps = SHAPES[shape](rng)
        for k in range(len(gaps) + 1):
            plan.append((t, chat, k))
            if k < len(gaps):
                t += gaps[k]
        last_k[chat] = len(gaps)
    heapq.heapify(plan)
    last_sent, statuses = {}, {}
    plan_lock = threading.Lock()
    t0 = time.time() + 0.5

    def sender():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with plan_lock:
                if not plan:
                    break
                due, chat, k = heapq.heappop(plan)
            delay = t0 + due - time.time()
            if delay > 0:
                time.sleep(delay)
            body = c.text_message(f"cliente {chat} mensagem {k}", f"D{chat}_{k}", number=c.chat_number(chat),
                                  instance=c.INSTANCE)
            status, conn, sent = c.post_on(conn, port, body, tries=3)
            with plan_lock:
                statuses[status] = statuses.get(status, 0) + 1
                if k == last_k[chat]:
                    last_sent[chat] = sent

    print(f"{shape}: {chats} chats over {spread:.0f} s, DEBOUNCE_SECONDS={DEBOUNCE:g}, {workers} worker(s)", flush=True)
    threads = [threading.Thread(target=sender, daemon=True) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent_done = time.time()
    print(f"  sent {sum(statuses.values())} messages in {sent_done - t0:.1f} s: {statuses}", flush=True)

    def replied():
        return {int(n[-8:]) for _, n, _ in evolution.sent_texts()}

    deadline = sent_done + DEBOUNCE + 60
    while time.time() < deadline and len(replied()) < chats:
        time.sleep(0.2)
    finished = time.time()
    time.sleep(3)  # a second call or reply for any chat would show up here
    worker_stats = c.rq_worker_stats(r)

    replies = {}
    for _, number, _ in evolution.sent_texts():
        replies[int(number[-8:])] = replies.get(int(number[-8:]), 0) + 1
    # A chat never answered counts with the lateness it had reached when the wait ended (a lower bound).
    late = sorted((min(arrivals[ch]) if ch in arrivals else finished) - (last_sent[ch] + DEBOUNCE) for ch in last_sent)
    jobs = sum(w["successful"] + w["failed"] for w in worker_stats)
    busy = sum(w["working_s"] for w in worker_stats)
    result = {
        "shape": shape, "chats": chats, "workers": workers, "debounce_s": DEBOUNCE, "spread_s": spread,
        "answered": len(arrivals), "p50_s": c.pct(late, 50), "p99_s": c.pct(late, 99),
        "max_s": late[-1] if late else None, "min_s": late[0] if late else None,
        "early": sum(1 for x in late if x < 0),
        "exactly_one_call": sum(1 for ch in range(chats) if len(arrivals.get(ch, [])) == 1),
        "exactly_one_reply": sum(1 for ch in range(chats) if replies.get(ch, 0) == 1),
        "gemini_calls": sum(len(v) for v in arrivals.values()), "replies": sum(replies.values()),
        "rq_workers": worker_stats, "rq_jobs": jobs, "worker_busy_s": busy,
        "job_ms": busy * 1000 / jobs if jobs else None,
    }
    for p in procs + [webhook]:
        c.stop(p)
    return result


def body():
    cli = argparse.ArgumentParser()
    cli.add_argument("--chats", type=int, default=1000)
    cli.add_argument("--workers", type=int, default=2)
    cli.add_argument("--spread", type=float, default=SPREAD)
    cli.add_argument("--shapes", default="pairs,spread")
    args = cli.parse_args()
    results = {}
    for shape in args.shapes.split(","):
        results[shape] = run(shape, args.chats, args.workers, args.spread)
    print()
    print("Debounce lateness (Gemini call - (last message + DEBOUNCE_SECONDS)); target p99 <= 0.5 s, none early,"
          " 1 call and 1 reply per chat")
    print(c.table([[s["shape"], s["chats"], s["workers"], f"{s['p50_s']:.2f}", f"{s['p99_s']:.2f}", f"{s['max_s']:.2f}",
                    f"{s['min_s']:.2f}", s["early"], f"{s['exactly_one_call']}/{s['chats']}",
                    f"{s['exactly_one_reply']}/{s['chats']}", s["gemini_calls"], s["replies"]] for s in results.values()],
                  ["shape", "chats", "workers", "p50 s", "p99 s", "max s", "min s", "early", "1 Gemini call",
                   "1 reply", "Gemini calls", "replies"]))
    print()
    print("Worker time per job, from RQ's worker hashes (total_working_time / jobs)")
    print(c.table([[s["shape"], s["rq_jobs"], f"{s['worker_busy_s']:.1f}",
                    f"{s['job_ms']:.1f}" if s["job_ms"] is not None else "-"] for s in results.values()],
                  ["shape", "RQ jobs", "busy s (all workers)", "mean ms per job"]))
    figures = {}
    for shape, s in results.items():
        for k in ("p50_s", "p99_s", "max_s", "early", "exactly_one_call", "exactly_one_reply", "job_ms",
                  "worker_busy_s", "rq_jobs"):
            figures[f"debounce_{shape}_{k}"] = s[k]
        figures[f"debounce_{shape}_chats"] = s["chats"]
    name = "debounce" if args.chats == 1000 else f"debounce_{args.chats}"
    c.save(name, {"results": results}, figures)


if __name__ == "__main__":
    c.main(body, time_limit=280)
