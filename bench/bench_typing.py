"""A worker is never held by a typing delay: full 3-part replies per worker-minute.

    python bench/bench_typing.py [--code DIR] [--chats 60] [--window 60]     # about 80 s

One `python worker.py`, FakeGemini answering at once with a 3-part reply (three paragraphs split
by blank lines, each over 140 characters: with TIME_PER_CHAR_MS=30 and MAX_TYPING_MS=4000 each
part is typed for 4 s), FakeEvolution with time_scale=1.0 (it holds sendPresence and sendText for
their `delay`, as the real Evolution does), SEND_PRESENCE=true, DEBOUNCE_SECONDS=1, a long lease
and Evolution timeout. One message to each of CHATS chats at once; over WINDOW seconds after the
first message is due, count the chats whose three parts were all sent (sendText answered): full
replies per worker-minute. A worker that waits through every part's typing gets through about
60 / (3 x 4 s) = 5 a minute.

Checked too, from FakeEvolution's records: each chat's parts arrived in order (part 1, 2, 3 of
its own answer), no part was sent twice, and a "composing" sendPresence for the chat arrived
before each part's sendText (after the previous part's, for parts 2 and 3).
"""

import argparse
import re
import time

import common as c

DEBOUNCE = 1.0
PART = ("parte {k} para o cliente {chat}: o bolo de chocolate médio custa cento e vinte reais, a entrega é "
        "amanhã à tarde e aceitamos pix ou cartão; a cobertura pode ser de brigadeiro ou de morango, você escolhe.")


def answer(chat):
    return "\n\n".join(PART.format(k=k, chat=chat) for k in (1, 2, 3))


class TimedEvolution(c.FakeEvolution):
    """FakeEvolution that also notes when each sendText was answered (after its typing `delay`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.done = []  # (time answered, number, text)

    def _sendText(self, instance, body):
        answer_ = super()._sendText(instance, body)
        if answer_[0] == 201:
            with self._lock:
                self.done.append((time.time(), body["number"], body["text"]))
        return answer_


def body():
    cli = argparse.ArgumentParser()
    cli.add_argument("--chats", type=int, default=60)
    cli.add_argument("--window", type=float, default=60.0)
    args = cli.parse_args()
    assert len(PART.format(k=1, chat=0)) * 30 >= 4000, "each part must be typed for MAX_TYPING_MS"

    url, r = c.start_redis()
    evolution = TimedEvolution(api_key=c.EVOLUTION_KEY, instances={c.INSTANCE}, time_scale=1.0)
    gemini = c.FakeGemini(api_key=c.GEMINI_KEY)
    gemini.responder = lambda request_json: answer(int(re.search(r"cliente (\d+)", request_json["contents"][-1]
                                                                  ["parts"][-1].get("text", "")).group(1)))
    evolution.start()
    gemini.start()
    c._fakes.extend([evolution, gemini])
    env = c.bot_env(url, evolution.url, gemini.url, debounce_seconds=DEBOUNCE, time_per_char_ms=30,
                    max_typing_ms=4000, send_presence="true", job_lease_seconds=900, evolution_timeout_seconds=30)
    webhook, port = c.start_webhook(env)
    c.start_worker(env)
    c.wait_workers(r, 1)

    bodies = [c.text_message(f"oi, sou o cliente {chat}, quanto custa o bolo?", f"T{chat}", number=c.chat_number(chat),
                             instance=c.INSTANCE) for chat in range(args.chats)]
    t_post = time.time()
    statuses = c.post_many(port, bodies, threads=12)
    due = t_post + DEBOUNCE
    print(f"{args.chats} chats posted in {time.time() - t_post:.1f} s ({statuses}); window {args.window:g} s "
          f"from the first message's due time", flush=True)
    end = due + args.window
    while time.time() < end:
        time.sleep(min(1.0, max(end - time.time(), 0)))
    worker_stats = c.rq_worker_stats(r)

    with evolution._lock:
        done = list(evolution.done)
        requests = [dict(x) for x in evolution.requests]
    in_window = [d for d in done if d[0] <= end]
    parts_of = {}
    for _, number, text in sorted(in_window):
        parts_of.setdefault(int(number[-8:]), []).append(text)
    expected = {chat: answer(chat).split("\n\n") for chat in range(args.chats)}
    full = sum(1 for chat, texts in parts_of.items() if len(texts) >= 3)
    out_of_order = [chat for chat, texts in parts_of.items() if texts != expected[chat][:len(texts)]]
    all_sent = [(number, text) for _, number, text in done]
    twice = len(all_sent) - len(set(all_sent))

    # "composing" before each part: a sendPresence arrived after the previous part's sendText and before this one's.
    presence, sends = {}, {}
    for req in requests:
        body_ = req.get("json") or {}
        if req.get("route") == "sendPresence" and body_.get("presence") == "composing":
            presence.setdefault(int(body_["number"][-8:]), []).append(req["time"])
        elif req.get("route") == "sendText" and req.get("status") == 201:
            sends.setdefault(int(body_["number"][-8:]), []).append(req["time"])
    parts_checked, parts_typed = 0, 0
    for chat, times in sends.items():
        times.sort()
        for k, t in enumerate(times):
            since = times[k - 1] if k else 0
            parts_checked += 1
            parts_typed += any(since < p <= t for p in presence.get(chat, []))
    per_worker_minute = full / 1 / (args.window / 60)
    jobs = sum(w["successful"] + w["failed"] for w in worker_stats)
    busy = sum(w["working_s"] for w in worker_stats)
    result = {"chats": args.chats, "window_s": args.window, "workers": 1, "full_replies": full,
              "replies_per_worker_minute": per_worker_minute, "parts_sent_in_window": len(in_window),
              "chats_out_of_order": len(out_of_order), "parts_sent_twice": twice, "parts_checked": parts_checked,
              "parts_with_composing_before": parts_typed, "rq_jobs": jobs, "worker_busy_s": busy,
              "job_ms": busy * 1000 / jobs if jobs else None, "statuses": statuses}
    print()
    print("3-part replies (4 s of typing each part), 1 worker")
    print(c.table([[args.chats, f"{args.window:g}", full, f"{per_worker_minute:.1f}", len(in_window),
                    f"{len(out_of_order)}", twice, f"{parts_typed}/{parts_checked}", jobs,
                    f"{result['job_ms']:.0f}" if jobs else "-"]],
                  ["chats", "window s", "full replies", "replies per worker-minute", "parts sent", "chats out of order",
                   "parts sent twice", "parts after a 'composing'", "RQ jobs", "mean ms per job"]))
    base, commit = c.baseline_figure("typing_replies_per_worker_minute")
    if base:
        print(f"Replies per worker-minute: {per_worker_minute:.1f}; baseline ({commit}, bench/baseline.json) {base:.1f};"
              f" target >= 3x baseline = {3 * base:.1f}: {'met' if per_worker_minute >= 3 * base else 'NOT met'}")
    figures = {"typing_replies_per_worker_minute": per_worker_minute, "typing_chats_out_of_order": len(out_of_order),
               "typing_parts_sent_twice": twice,
               "typing_parts_without_composing": parts_checked - parts_typed, "typing_parts_checked": parts_checked,
               "typing_job_ms": result["job_ms"]}
    c.save("typing", {"result": result}, figures)


if __name__ == "__main__":
    c.main(body, time_limit=175)
