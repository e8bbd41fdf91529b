"""The busy hour (issue 18): a lunch rush on one worker process while Gemini is slow, and a backlog of new chats.

    python bench/bench_busy_hour.py [--code DIR]             # both parts: about 6 minutes
    python bench/bench_busy_hour.py rush --chats 40          # one part, lighter

* rush: 200 chats write one message each within RUSH_SPREAD seconds, DEBOUNCE_SECONDS=2, FakeGemini
  takes 3 s per call (as the real one does), ONE `python worker.py` with its default settings,
  typing off (TIME_PER_CHAR_MS=0, SEND_PRESENCE=false: the lateness is the engine's, not the typing
  time). Lateness = the reply's arrival at FakeEvolution - (the message's send time + DEBOUNCE_SECONDS),
  so 3 s is the least possible. The worker service's memory = PSS summed over `python worker.py` and
  all its descendants (/proc/<pid>/smaps_rollup), sampled every 0.25 s: idle before the rush and
  its peak. Targets: p99 <= 5 s, exactly 1 Gemini call and 1 reply per chat, peak <= 250 MB.
* backlog: 12,000 new chats (one message each) posted as fast as the webhook takes them (8
  connections), DEBOUNCE_SECONDS=2, FakeGemini instant, 2 `python worker.py`. RQ's queue length
  (`rq:queue:whatsapp`) sampled every 0.2 s. Targets: every chat answered exactly once within 300 s
  of the last post; the queue never holds more than 1.1x the chats.
"""

import argparse
import http.client
import threading
import time

import common as c

RUSH_CHATS, RUSH_SPREAD, GEMINI_SECONDS, DEBOUNCE = 200, 3.0, 3.0, 2.0
BACKLOG_CHATS, BACKLOG_WAIT = 12_000, 300.0
QUEUE = "rq:queue:whatsapp"


def tree_pss_kb(pid):
    """PSS (KiB) of `pid` and all its descendants: the whole worker service, forks included."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += c.memory_kb(p)[1]
        todo.extend(c.children(p))
    return total


class Sampler(threading.Thread):
    """Calls `measure()` every `every` seconds and keeps the largest value."""

    def __init__(self, measure, every):
        super().__init__(daemon=True)
        self.measure, self.every, self.peak, self.stopped = measure, every, 0, threading.Event()

    def run(self):
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, self.measure())
            except Exception:  # noqa: BLE001 (a process that just ended)
                pass
            self.stopped.wait(self.every)

    def stop(self):
        self.stopped.set()
        self.join()
        return self.peak


def replies_by_number(evolution):
    """{number: [arrival times of its sendText calls]}."""
    out = {}
    for record in evolution.calls("sendText"):
        number = (record.get("json") or {}).get("number")
        if number:
            out.setdefault(number, []).append(record["time"])
    return out


def gemini_calls_by_number(gemini, numbers):
    """{number: [arrival times of its Gemini calls]} (the burst's text starts with "cliente <i> ")."""
    out = {}
    for i, request in enumerate(list(gemini.requests)):
        words = " ".join(gemini.user_texts(i)).split()
        if len(words) > 1 and words[0] == "cliente" and words[1].isdigit() and int(words[1]) < len(numbers):
            out.setdefault(numbers[int(words[1])], []).append(request["time"])
    return out


def rush(chats):
    url, r = c.start_redis("redis-rush")

    def slow(request_json):
        time.sleep(GEMINI_SECONDS)
        return "Oi! Temos sim, pode passar aqui."

    evolution, gemini = c.start_fakes(gemini_responder=slow)
    env = c.bot_env(url, evolution.url, gemini.url, debounce_seconds=DEBOUNCE, time_per_char_ms=0,
                    send_presence="false", mark_read="false")
    webhook, port = c.start_webhook(env, name="webhook-rush")
    worker = c.start_worker(env, name="worker-rush")
    c.wait_workers(r, 1)
    time.sleep(2)
    idle_kb, cpu0 = tree_pss_kb(worker.pid), c.cpu_seconds(worker.pid)
    numbers = [c.chat_number(i) for i in range(chats)]
    sampler = Sampler(lambda: tree_pss_kb(worker.pid), 0.25)
    sampler.start()

    sent, lock = {}, threading.Lock()
    t0 = time.time() + 0.3

    def post(i):
        time.sleep(max(0.0, t0 + RUSH_SPREAD * i / chats - time.time()))
        body = c.text_message(f"cliente {i} quer saber se tem bolo", f"R{i}", number=numbers[i], instance=c.INSTANCE)
        status, _, at = c.post_on(http.client.HTTPConnection("127.0.0.1", port, timeout=10), port, body, tries=3)
        with lock:
            sent[numbers[i]] = (status, at)

    threads = [threading.Thread(target=post, args=(i,), daemon=True) for i in range(chats)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"rush: {chats} chats posted in {time.time() - t0:.1f} s, Gemini {GEMINI_SECONDS:g} s per call, "
          f"1 worker process", flush=True)
    deadline = time.time() + DEBOUNCE + GEMINI_SECONDS * chats + 30  # one call at a time, as before, would end by then
    while time.time() < deadline and len(replies_by_number(evolution)) < chats:
        time.sleep(0.25)
    finished = time.time()
    time.sleep(3)  # a second call or reply would show up here
    peak_kb = sampler.stop()
    cpu = c.cpu_seconds(worker.pid) - cpu0

    replies = replies_by_number(evolution)
    calls = gemini_calls_by_number(gemini, numbers)
    late = sorted((min(replies[n]) if n in replies else finished) - (at + DEBOUNCE) for n, (_, at) in sent.items())
    asked = sorted((min(calls[n]) if n in calls else finished) - (at + DEBOUNCE) for n, (_, at) in sent.items())
    result = {
        "chats": chats, "gemini_s": GEMINI_SECONDS, "posted_ok": sum(1 for s, _ in sent.values() if s == 200),
        "answered": len(replies), "p50_s": c.pct(late, 50), "p99_s": c.pct(late, 99), "max_s": late[-1],
        "gemini_p50_s": c.pct(asked, 50), "gemini_p99_s": c.pct(asked, 99),
        "exactly_one_call": sum(1 for n in numbers if len(calls.get(n, [])) == 1),
        "exactly_one_reply": sum(1 for n in numbers if len(replies.get(n, [])) == 1),
        "pss_idle_mb": idle_kb / 1024, "pss_peak_mb": peak_kb / 1024, "worker_cpu_ms_per_chat": cpu * 1000 / chats,
    }
    for p in (worker, webhook):
        c.stop(p)
    return result


def backlog(chats, workers=2):
    url, r = c.start_redis("redis-backlog")
    evolution, gemini = c.start_fakes(gemini_responder=lambda body: "Oi!")
    env = c.bot_env(url, evolution.url, gemini.url, debounce_seconds=DEBOUNCE, time_per_char_ms=0,
                    send_presence="false", mark_read="false")
    webhook, port = c.start_webhook(env, name="webhook-backlog")
    procs = [c.start_worker(env, name=f"worker{i}-backlog") for i in range(workers)]
    c.wait_workers(r, workers)
    sampler = Sampler(lambda: r.llen(QUEUE), 0.2)
    sampler.start()

    numbers = [c.chat_number(i) for i in range(chats)]
    bodies = [c.text_message(f"cliente {i} oi", f"B{i}", number=n, instance=c.INSTANCE) for i, n in enumerate(numbers)]
    t0 = time.time()
    statuses = c.post_many(port, bodies, threads=8)
    last_post = time.time()
    print(f"backlog: {chats} chats posted in {last_post - t0:.1f} s ({statuses}), {workers} worker processes",
          flush=True)
    answered_at = None
    while time.time() < last_post + BACKLOG_WAIT:
        if len(replies_by_number(evolution)) >= chats:
            answered_at = time.time()
            break
        time.sleep(1)
    answered = len(replies_by_number(evolution))
    waited = time.time()
    time.sleep(5)
    longest = sampler.stop()
    replies = replies_by_number(evolution)
    result = {
        "chats": chats, "workers": workers, "post_s": last_post - t0, "statuses": statuses,
        "answered_in_window": answered, "drain_s": (answered_at or waited) - last_post,
        "all_answered": answered_at is not None,
        "exactly_one_reply": sum(1 for n in numbers if len(replies.get(n, [])) == 1),
        "gemini_calls": len(gemini.requests), "queue_max": longest, "queue_max_ratio": longest / chats,
        "queue_left": r.llen(QUEUE), "redis_used_mb": r.info("memory")["used_memory"] / 1048576,
    }
    for p in procs + [webhook]:
        c.stop(p)
    return result


def body():
    cli = argparse.ArgumentParser()
    cli.add_argument("parts", nargs="*", default=["rush", "backlog"])
    cli.add_argument("--chats", type=int, help="chats for each part (default: 200 rush, 12,000 backlog)")
    args = cli.parse_args()
    figures, results = {}, {}
    if "rush" in args.parts:
        s = results["rush"] = rush(args.chats or RUSH_CHATS)
        print(c.table([[s["chats"], s["answered"], f"{s['p50_s']:.2f}", f"{s['p99_s']:.2f}", f"{s['max_s']:.2f}",
                        f"{s['gemini_p50_s']:.2f}", f"{s['gemini_p99_s']:.2f}",
                        s["exactly_one_call"], s["exactly_one_reply"], f"{s['pss_idle_mb']:.0f}",
                        f"{s['pss_peak_mb']:.0f}", f"{s['worker_cpu_ms_per_chat']:.0f}"]],
                      ["chats", "answered", "p50 s", "p99 s", "max s", "Gemini asked p50 s", "p99 s", "1 Gemini call", "1 reply", "PSS idle MB",
                       "PSS peak MB", "worker CPU ms/chat"]), flush=True)
        if s["chats"] == RUSH_CHATS:
            figures.update({f"rush_{k}": s[k] for k in ("chats", "p50_s", "p99_s", "max_s", "gemini_p99_s", "exactly_one_call",
                                                         "exactly_one_reply", "pss_idle_mb", "pss_peak_mb",
                                                         "worker_cpu_ms_per_chat")})
    if "backlog" in args.parts:
        s = results["backlog"] = backlog(args.chats or BACKLOG_CHATS)
        print(c.table([[s["chats"], f"{s['post_s']:.1f}", s["answered_in_window"], f"{s['drain_s']:.0f}",
                        s["exactly_one_reply"], s["gemini_calls"], s["queue_max"], f"{s['queue_max_ratio']:.2f}",
                        f"{s['redis_used_mb']:.0f}"]],
                      ["chats", "posted in s", "answered", "s after last post", "1 reply", "Gemini calls",
                       "queue max", "queue max / chats", "Redis MB"]), flush=True)
        if s["chats"] == BACKLOG_CHATS:
            figures.update({f"backlog_{k}": s[k] for k in ("chats", "answered_in_window", "drain_s",
                                                            "exactly_one_reply", "gemini_calls", "queue_max_ratio")})
    c.save("busy_hour" if not args.chats else f"busy_hour_{args.chats}", {"results": results}, figures)


if __name__ == "__main__":
    c.main(body, time_limit=900)
