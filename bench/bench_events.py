"""What outgoing events (EVENTS_URL, events.py) cost the webhook, and how soon a receiver gets them.

    python bench/bench_events.py [--code DIR]     # about 30 s

Real redis-server, `gunicorn webhook:app` and one `python worker.py`; FakeReceiver (tests/fakes.py)
stands for n8n. First the webhook alone, EVENTS_URL off then on: Redis round trips
(`total_reads_processed`) per new-chat message, as bench_redis_ops.py counts them. Then, with a
worker, N messages to N chats: the time from the webhook's answer to the receiver's getting the
event message.received (p50, p90), against the same for the reply's sendText at Evolution.
"""

import threading
import time

import common as c
from bench_redis_ops import delta, snapshot
from fakes import FakeReceiver

N = 200
LATENCY_CHATS = 50
SECRET = "bench-events-secret-0123456789"


def round_trips(env, r, name, base):
    webhook, port = c.start_webhook(env, name=name)
    for i in range(10):  # warm up both gunicorn workers
        c.post(port, c.text_message("oi", f"{name}W{i}", number=c.chat_number(base + 900 + i)))
    before = snapshot(r)
    for i in range(N):
        c.post(port, c.text_message("oi, bom dia", f"{name}{i}", number=c.chat_number(base + i)))
    d = delta(before, snapshot(r))
    c.stop(webhook)
    return d["reads"] / N, d["commands"] / N


def body():
    url, r = c.start_redis()
    evolution, gemini = c.start_fakes(gemini_responder=lambda _: "Oi! Posso ajudar?")
    receiver = FakeReceiver(SECRET)
    receiver.start()
    off_env = c.bot_env(url, evolution.url, gemini.url)
    on_env = {**off_env, "EVENTS_URL": f"{receiver.url}/webhook/events", "EVENTS_SECRET": SECRET}
    off = round_trips(off_env, r, "off", 0)
    on = round_trips(on_env, r, "on", 10_000)
    r.delete("wa:events:due")  # the "on" run's events stay undelivered (no worker yet): not measured below
    for key in r.scan_iter("wa:event:*"):
        r.delete(key)

    env = {**on_env, "DEBOUNCE_SECONDS": "0"}
    webhook, port = c.start_webhook(env, name="webhook-latency")
    c.start_worker(env, name="events-worker")
    c.wait_workers(r, 1)
    answered, lock = {}, threading.Lock()
    for i in range(LATENCY_CHATS):
        number = c.chat_number(50_000 + i)
        c.post(port, c.text_message("oi", f"L{i}", number=number))
        with lock:
            answered[c.chat_cid(number)] = time.time()
        time.sleep(0.05)
    c.wait_until(lambda: sum(e["event"] == "message.received" for e in receiver.events) >= LATENCY_CHATS, 60, 0.02,
                 message="the events")
    c.wait_until(lambda: len(evolution.sent_texts()) >= LATENCY_CHATS, 60, 0.02, message="the replies")
    arrived = {}
    for request, event in zip([q for q in receiver.requests if q["status"] == 200], receiver.events):
        if event["event"] == "message.received":
            arrived.setdefault(event["chat"], request["time"])
    import events as events_module  # the keyed chat id the receiver sees, to match events to posts
    from config import load_settings

    settings = load_settings({**env, "EVENTS_URL": on_env["EVENTS_URL"]}, require=())
    delays = sorted((arrived[events_module.chat_key(settings, cid)] - at) * 1000 for cid, at in answered.items()
                    if events_module.chat_key(settings, cid) in arrived)
    sends = sorted(call["time"] for call in evolution.calls("sendText"))
    receiver.stop()

    rows = [["EVENTS_URL off", f"{off[0]:.2f}", f"{off[1]:.2f}"], ["EVENTS_URL on", f"{on[0]:.2f}", f"{on[1]:.2f}"]]
    print(f"Webhook: Redis work per new-chat message ({N} messages, one at a time)")
    print(c.table(rows, ["", "round trips", "commands"]))
    p50, p90 = c.pct(delays, 50), c.pct(delays, 90)
    print(f"\nmessage.received at the receiver, after the webhook's answer ({len(delays)} chats, 1 worker): "
          f"p50 {p50:.0f} ms, p90 {p90:.0f} ms; each event once: "
          f"{len({e['_id'] for e in receiver.events}) == len(receiver.events)}")
    c.save("events", {"off": off, "on": on, "delays_ms": delays, "sends": len(sends)},
           {"events_round_trips_off": off[0], "events_round_trips_on": on[0], "events_latency_p50_ms": p50})


if __name__ == "__main__":
    c.main(body, time_limit=120)
