"""Debounce precision: how late each chat's Gemini call comes after its last message + DEBOUNCE_SECONDS.

    python bench/bench_debounce.py                 # 1,000 chats, bursts over 20 s, 2 workers: ~95 s
    python bench/bench_debounce.py --chats 50      # light load: the scheduler's own granularity

The issue's case is 1,000 chats with bursts spread over a minute and DEBOUNCE_SECONDS=120; time is
scaled down here: DEBOUNCE_SECONDS=5 and bursts spread over 20 s (so 50 chats/s start a burst,
3x the issue's rate of 1,000 per minute: a harder test). Each chat sends a burst of 3 messages,
0.3-1.5 s apart, through the real `gunicorn webhook:app`; 2 `python worker.py` processes (RQ
Worker + scheduler) answer; FakeGemini answers at once and records when each chat's call arrives;
FakeEvolution (typing delay off) records each reply.

Lateness = Gemini arrival - (send time of the chat's last message + DEBOUNCE_SECONDS); the send
time is taken just before the POST, so the figure can only overstate lateness by the webhook's
latency (ms). Target: p99 <= 1.5 s, exactly 1 Gemini call and 1 reply per burst.
"""

import argparse
import heapq
import random
import re
import threading
import time

import common as c

DEBOUNCE = 5.0
SPREAD = 20.0
PER_BURST = 3


def run(chats, workers, spread, seed=1):
    url, r = c.start_redis()
    arrivals, lock = {}, threading.Lock()

    def responder(request_json):
        text = request_json["contents"][-1]["parts"][-1].get("text", "")
        chat = int(re.search(r"cliente (\d+)", text).group(1))
        with lock:
            arrivals.setdefault(chat, []).append(time.time())
        return f"Oi cliente {chat}, tudo certo!"

    evolution, gemini = c.start_fakes(gemini_responder=responder)
    env = c.bot_env(url, evolution.url, gemini.url, debounce_seconds=DEBOUNCE)
    webhook, port = c.start_webhook(env)
    procs = [c.start_worker(env, name=f"worker{i}") for i in range(workers)]
    c.wait_workers(r, workers)

    rng = random.Random(seed)
    plan = []  # (due offset, chat, index in burst)
    for chat in range(chats):
        t = rng.uniform(0, spread)
        for k in range(PER_BURST):
            plan.append((t, chat, k))
            t += rng.uniform(0.3, 1.5)
    heapq.heapify(plan)
    last_sent, statuses = {}, {}
    plan_lock = threading.Lock()
    t0 = time.time() + 0.5

    def sender():
        import http.client

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
            for attempt in range(3):  # gunicorn closes idle keep-alive connections after 2 s: reconnect
                sent = time.time()
                try:
                    conn.request("POST", f"/webhook?token={c.TOKEN}", body=c.json.dumps(body),
                                 headers={"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                    break
                except (OSError, c.http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    status = "error"
            with plan_lock:
                statuses[status] = statuses.get(status, 0) + 1
                if k == PER_BURST - 1:
                    last_sent[chat] = sent

    print(f"{chats} chats x {PER_BURST} messages over {spread:.0f} s, DEBOUNCE_SECONDS={DEBOUNCE:g}, "
          f"{workers} worker(s)", flush=True)
    threads = [threading.Thread(target=sender, daemon=True) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent_done = time.time()
    print(f"  sent {sum(statuses.values())} messages in {sent_done - t0:.1f} s: {statuses}", flush=True)

    def replied():
        return {int(n[-8:]) for _, n, _ in evolution.sent_texts()}

    deadline = sent_done + DEBOUNCE + 90
    while time.time() < deadline and len(replied()) < chats:
        time.sleep(0.2)
    finished = time.time()
    time.sleep(3)  # a second call or reply for any chat would show up here

    replies = {}
    for _, number, _ in evolution.sent_texts():
        replies[int(number[-8:])] = replies.get(int(number[-8:]), 0) + 1
    # A chat never answered counts with the lateness it had reached when the wait ended (a lower bound).
    late = sorted((min(arrivals[ch]) if ch in arrivals else finished) - (last_sent[ch] + DEBOUNCE) for ch in last_sent)
    one_call = sum(1 for ch in range(chats) if len(arrivals.get(ch, [])) == 1)
    one_reply = sum(1 for ch in range(chats) if replies.get(ch, 0) == 1)
    early = sum(1 for x in late if x < -0.01)
    result = {
        "chats": chats, "workers": workers, "debounce_s": DEBOUNCE, "spread_s": spread,
        "answered": len(arrivals), "p50_s": c.pct(late, 50), "p99_s": c.pct(late, 99), "max_s": late[-1] if late else None,
        "min_s": late[0] if late else None, "early": early, "exactly_one_call": one_call, "exactly_one_reply": one_reply,
        "gemini_calls": sum(len(v) for v in arrivals.values()), "replies": sum(replies.values()),
        "last_reply_after_last_message_s": finished - sent_done,
    }
    for p in procs:
        c.stop(p)
    return result


def body():
    cli = argparse.ArgumentParser()
    cli.add_argument("--chats", type=int, default=1000)
    cli.add_argument("--workers", type=int, default=2)
    cli.add_argument("--spread", type=float, default=SPREAD)
    args = cli.parse_args()
    res = run(args.chats, args.workers, args.spread)
    print()
    print("Debounce lateness (Gemini call after last message + DEBOUNCE_SECONDS); target p99 <= 1.5 s")
    print(c.table([[res["chats"], res["workers"], f"{res['p50_s']:.2f}", f"{res['p99_s']:.2f}", f"{res['max_s']:.2f}",
                    f"{res['min_s']:.2f}", res["early"], f"{res['exactly_one_call']}/{res['chats']}",
                    f"{res['exactly_one_reply']}/{res['chats']}", res["gemini_calls"], res["replies"]]],
                  ["chats", "workers", "p50 s", "p99 s", "max s", "min s", "early", "1 Gemini call",
                   "1 reply", "Gemini calls", "replies"]))
    ok = (res["p99_s"] is not None and res["p99_s"] <= 1.5 and res["exactly_one_call"] == res["chats"]
          and res["exactly_one_reply"] == res["chats"])
    summary = [c.summary_row(
        f"Debounce lateness, {res['chats']} chats, bursts over {res['spread_s']:g} s, DEBOUNCE_SECONDS=5, "
        f"{res['workers']} workers", "p99 <= 1.5 s; 1 call and 1 reply per burst",
        f"p50 {res['p50_s']:.2f} s, p99 {res['p99_s']:.2f} s; 1 call {res['exactly_one_call']}/{res['chats']},"
        f" 1 reply {res['exactly_one_reply']}/{res['chats']}", ok,
        command="python bench/bench_debounce.py" + (f" --chats {res['chats']}" if res["chats"] != 1000 else ""))]
    c.save(f"debounce_{res['chats']}", {"result": res, "summary": summary})


if __name__ == "__main__":
    c.main(body, time_limit=175)
