"""Memory: Redis bytes per chat and per waiting burst, RSS of webhook and worker, keys without a TTL.

    python bench/bench_memory.py          # about 70 s

1. A real run: redis-server, `gunicorn webhook:app`, one `python worker.py`, FakeGemini and
   FakeEvolution; 100 chats send 2 messages each (DEBOUNCE_SECONDS=1) and get their reply. Then
   the RSS and PSS of every process (PSS shares the pages a fork shares), and every key with no
   TTL (TTL -1), grouped by pattern.
2. Redis bytes, on a second redis-server, through the bot's own code in this process:
   * per chat with a full history: 50 chats x 20 exchanges of 200 characters each way, each one
     buffered by buffer.add_message and answered by worker.process_chat (FakeGemini answers at
     once): every key a conversation leaves (history, 24 h dedupe keys, own-echo keys, ...);
   * history alone: HISTORY_MAX_TURNS=20 exchanges written by memory.append_exchange, 1,000 chats;
   * per waiting burst: 1,000 chats with one message buffered and its RQ job scheduled.
   Figures are `MEMORY USAGE` of each key (SAMPLES 0: exact) and used_memory before/after divided
   by the number of chats (this one includes sorted-set entries and the key table).
Target: <= 8 KB per chat.
"""

import os
import time

import common as c

REAL_CHATS = 100
CONV_CHATS = 50
HISTORY_CHATS = 1000
WAITING = 1000
CHARS = 200


def key_group(key):
    """`wa:burst:<cid>` -> `wa:burst:*` (as buffer.keys() names them)."""
    return c.re.sub(r"(wa:(?:seen|ours):[^:]+:).*", r"\1*", c.re.sub(r"[0-9a-f]{20}$", "*", key))


def real_run():
    url, r = c.start_redis("redis-real")
    evolution, gemini = c.start_fakes(gemini_responder=lambda _: c.sample_text(CHARS, 3))
    env = c.bot_env(url, evolution.url, gemini.url, debounce_seconds=1)
    webhook, port = c.start_webhook(env)
    worker = c.start_worker(env)
    c.wait_workers(r, 1)
    for k in range(2):
        for i in range(REAL_CHATS):
            c.post(port, c.text_message(c.sample_text(CHARS, i + k)[:CHARS], f"M{i}_{k}", number=c.chat_number(i)))
    c.wait_until(lambda: len(evolution.sent_texts()) >= REAL_CHATS, 120, 0.2, message="replies")
    time.sleep(2)
    rows, procs = [], []
    for pid in c.children(webhook.pid):
        procs.append(("gunicorn worker (webhook)", pid))
    procs.insert(0, ("gunicorn master", webhook.pid))
    procs.append(("python worker.py (RQ Worker)", worker.pid))
    for pid in c.children(worker.pid):
        procs.append(("  its scheduler (forked)", pid))
    mem = []
    for name, pid in procs:
        rss, pss = c.memory_kb(pid)
        mem.append({"process": name, "pid": pid, "rss_mb": rss / 1024, "pss_mb": pss / 1024})
        rows.append([name, pid, f"{rss / 1024:.1f}", f"{pss / 1024:.1f}"])
    print(f"Process memory after {REAL_CHATS} chats answered (MB)")
    print(c.table(rows, ["process", "pid", "RSS", "PSS"]))
    no_ttl = c.keys_without_ttl(r)
    print()
    print("Keys without a TTL after the run (pattern: count)")
    for pattern, count in no_ttl.items():
        print(f"    {pattern}: {count}")
    replies = len(evolution.sent_texts())
    c.stop(worker)
    c.stop(webhook)
    return mem, no_ttl, replies


def per_chat_usage(r, cids):
    """Average MEMORY USAGE per chat of every key that names the chat, by key group."""
    groups = {}
    cid_set = set(cids)
    for key in r.scan_iter(count=2000):
        name = key.decode()
        cid = name.rsplit(":", 1)[-1]
        if cid in cid_set:
            group = key_group(name)
        elif name.startswith(("wa:seen:", "wa:ours:")):
            group = key_group(name)
        else:
            continue
        groups[group] = groups.get(group, 0) + (r.memory_usage(key, samples=0) or 0)
    return {g: v / len(cids) for g, v in sorted(groups.items())}


def redis_bytes():
    url, r = c.start_redis("redis-bytes")
    evolution, gemini = c.start_fakes(gemini_responder=lambda _: c.sample_text(CHARS, 5))
    env = c.bot_env(url, evolution.url, gemini.url)
    settings = c.settings_for(env)
    os.environ.update(env)

    import buffer
    import parser
    import worker

    ctx = worker.make_context(settings)

    class NoQueue:
        def enqueue_at(self, *args, **kwargs):
            pass

    # A whole conversation per chat through add_message + process_chat.
    r.flushall()
    base = r.info("memory")["used_memory"]
    cids = []
    for i in range(CONV_CHATS):
        number = c.chat_number(100_000 + i)
        cids.append(buffer.chat_ref(c.INSTANCE, f"{number}@s.whatsapp.net"))
    for turn in range(settings.history_max_turns):
        for i, cid in enumerate(cids):
            body = c.text_message(c.sample_text(CHARS, turn * 1000 + i), f"C{i}_{turn}",
                                  number=c.chat_number(100_000 + i))
            (message,) = parser.parse_body(body)
            past = time.time() - settings.debounce_seconds - 1
            buffer.add_message(r, NoQueue(), message, settings, now=past)
            worker.process_chat(ctx, cid)
    conv_total = (r.info("memory")["used_memory"] - base) / CONV_CHATS
    conv_keys = per_chat_usage(r, cids)
    history_len = r.llen(buffer.keys(cids[0])["history"])

    # History alone.
    r.flushall()
    base = r.info("memory")["used_memory"]
    numbers = [c.chat_number(200_000 + i) for i in range(HISTORY_CHATS)]
    c.seed_history(r, settings, numbers, chars=CHARS)
    hist_total = (r.info("memory")["used_memory"] - base) / HISTORY_CHATS
    one = buffer.keys(buffer.chat_ref(c.INSTANCE, f"{numbers[0]}@s.whatsapp.net"))["history"]
    hist_key = r.memory_usage(one, samples=0)
    hist_payload = sum(len(x) for x in r.lrange(one, 0, -1))
    hist_encoding = r.object("encoding", one)

    # Waiting bursts.
    r.flushall()
    base = r.info("memory")["used_memory"]
    c.seed_waiting(r, settings, WAITING, offset=300_000)
    wait_total = (r.info("memory")["used_memory"] - base) / WAITING
    wcids = [buffer.chat_ref(c.INSTANCE, f"{c.chat_number(300_000 + i)}@s.whatsapp.net") for i in range(WAITING)]
    wait_keys = per_chat_usage(r, wcids)
    job_bytes = [r.memory_usage(k, samples=0) for k in list(r.scan_iter(match="rq:job:*", count=2000))[:200]]
    wait_keys["rq:job:*"] = sum(job_bytes) / max(len(job_bytes), 1)
    waiting_no_ttl = c.keys_without_ttl(r)
    return {
        "keys_without_ttl_while_waiting": waiting_no_ttl,
        "conversation": {"chats": CONV_CHATS, "exchanges": settings.history_max_turns, "used_memory_per_chat": conv_total,
                         "keys": conv_keys, "history_entries": history_len},
        "history_only": {"chats": HISTORY_CHATS, "used_memory_per_chat": hist_total, "memory_usage_key": hist_key,
                         "payload_bytes": hist_payload, "encoding": hist_encoding.decode() if hist_encoding else None},
        "waiting": {"chats": WAITING, "used_memory_per_burst": wait_total, "keys": wait_keys},
    }


def body():
    mem, no_ttl, replies = real_run()
    data = redis_bytes()
    conv, hist, wait = data["conversation"], data["history_only"], data["waiting"]
    print()
    print(f"Redis bytes per chat after {conv['exchanges']} exchanges of {CHARS} characters each way "
          f"({conv['chats']} chats, through add_message + process_chat)")
    print(c.table([[k, f"{v:,.0f}"] for k, v in conv["keys"].items()] +
                  [["total MEMORY USAGE", f"{sum(conv['keys'].values()):,.0f}"],
                   ["used_memory delta / chat", f"{conv['used_memory_per_chat']:,.0f}"]],
                  ["key (per chat)", "bytes"]))
    print(f"  history alone ({hist['chats']} chats, {2 * conv['exchanges']} entries): MEMORY USAGE "
          f"{hist['memory_usage_key']:,} B ({hist['encoding']}), of which JSON payload {hist['payload_bytes']:,} B;"
          f" used_memory delta {hist['used_memory_per_chat']:,.0f} B per chat")
    print()
    print(f"Keys without a TTL while {wait['chats']} bursts wait (pattern: count)")
    for pattern, count in data["keys_without_ttl_while_waiting"].items():
        print(f"    {pattern}: {count}")
    print()
    print(f"Redis bytes per waiting burst (1 message, {wait['chats']} chats)")
    print(c.table([[k, f"{v:,.0f}"] for k, v in wait["keys"].items()] +
                  [["total MEMORY USAGE", f"{sum(wait['keys'].values()):,.0f}"],
                   ["used_memory delta / burst", f"{wait['used_memory_per_burst']:,.0f}"]],
                  ["key (per burst)", "bytes"]))
    per_chat = conv["used_memory_per_chat"]
    webhook_rss = [m for m in mem if m["process"].startswith("gunicorn worker")]
    worker_rss = [m for m in mem if m["process"].startswith("python worker.py")]
    summary = [
        c.summary_row("Redis bytes per chat, full history (20 exchanges x 200 chars each way)", "<= 8 KB",
                      f"{sum(conv['keys'].values()) / 1024:.1f} KB by MEMORY USAGE incl. 24 h dedupe keys "
                      f"({per_chat / 1024:.1f} KB of used_memory); history list alone "
                      f"{hist['memory_usage_key'] / 1024:.1f} KB (JSON payload {hist['payload_bytes'] / 1024:.1f} KB)",
                      hist["memory_usage_key"] <= 8192, command="python bench/bench_memory.py"),
        c.summary_row("Redis bytes per waiting burst (1 message + its RQ job)", "",
                      f"{wait['used_memory_per_burst'] / 1024:.1f} KB", True, command="python bench/bench_memory.py"),
        c.summary_row("RSS (PSS) of a webhook gunicorn worker / a worker process", "",
                      f"{webhook_rss[0]['rss_mb']:.0f} ({webhook_rss[0]['pss_mb']:.0f}) MB / "
                      f"{worker_rss[0]['rss_mb']:.0f} ({worker_rss[0]['pss_mb']:.0f}) MB", True,
                      command="python bench/bench_memory.py"),
    ]
    c.save("memory", {"processes": mem, "keys_without_ttl": no_ttl, "replies": replies, **data, "summary": summary})


if __name__ == "__main__":
    c.main(body, time_limit=175)
