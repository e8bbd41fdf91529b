"""Redis bytes per chat with a full history, and the RSS of the bot's processes.

    python bench/bench_memory.py [--code DIR] [--chats 20] [--exchanges 30]     # about 90 s

Real redis-server, `gunicorn webhook:app`, one `python worker.py` (DEBOUNCE_SECONDS=0.2, typing
off), FakeGemini and FakeEvolution. CHATS chats talk in parallel for EXCHANGES exchanges each:
the customer writes ~200 characters of Portuguese with accents, FakeGemini answers ~200, the reply
comes back as Evolution's `send.message` echo (compose turns that event on), and the next message
waits for the reply. Then:

(a) the target: Redis's `used_memory` growth over the conversations ÷ chats, everything the bot
    keeps counted (a warm-up chat first loads the scripts and the shared keys, so only what the
    chats add is counted), and how much of it is in keys (`MEMORY USAGE` of every key, before and
    after): `used_memory` also counts Redis's key tables, connection buffers and allocation rounding;
(b) per chat, by `MEMORY USAGE ... SAMPLES 0`, every key that contains the chat's cid, by key prefix
    (the record `wa:history:<cid>`, and before issue 18 the panel's log `wa:log:<cid>`, shown apart);
(c) the 24 h dedupe/echo keys (`wa:seen:*`, `wa:ours:*`: one key per id before issue 18) those
    exchanges left, per chat; and the keys that no chat owns (indexes, counters), in all.
Also the RSS (PSS) of the webhook's and the worker's processes, and keys without a TTL.
"""

import argparse
import re
import time

import common as c

CHARS = 200
MEMORY_FIELDS = ("used_memory", "used_memory_dataset", "used_memory_overhead", "mem_clients_normal", "mem_aof_buffer",
                 "used_memory_scripts")


def prefix(key, cid):
    """`wa:history:<cid>` -> `wa:history:*`; `wa:seen:shop:ID` -> `wa:seen:*`."""
    if cid and cid in key:
        return key.replace(cid, "*")
    return re.sub(r"^(wa:(?:seen|ours|lid):).*", r"\1*", key)


def usage(r, key):
    return r.memory_usage(key, samples=0) or 0


def keyspace(r):
    """MEMORY USAGE of every key, in all."""
    return sum(usage(r, key) for key in r.scan_iter(count=1000))


def body():
    cli = argparse.ArgumentParser()
    cli.add_argument("--chats", type=int, default=20)
    cli.add_argument("--exchanges", type=int, default=30)
    args = cli.parse_args()

    url, r = c.start_redis()
    evolution, gemini = c.start_fakes(gemini_responder=lambda req: c.sample_text(CHARS, len(req["contents"])))
    env = c.bot_env(url, evolution.url, gemini.url, debounce_seconds=0.2, time_per_char_ms=0, send_presence="false")
    webhook, port = c.start_webhook(env)
    worker = c.start_worker(env)
    c.wait_workers(r, 1)

    warm = c.converse(port, evolution, [c.chat_number(99_999)], 2, lambda i, k: c.sample_text(CHARS, k), prefix="W",
                      echoes=True)
    time.sleep(1)
    before, keys_before = r.info("memory"), keyspace(r)
    numbers = [c.chat_number(100_000 + i) for i in range(args.chats)]
    cids = [c.chat_cid(n) for n in numbers]
    t0 = time.time()
    errors = warm + c.converse(port, evolution, numbers, args.exchanges,
                               lambda i, k: (f"{k:02d} " + c.sample_text(CHARS, 1000 * i + k))[:CHARS], echoes=True)
    print(f"{args.chats} chats x {args.exchanges} exchanges in {time.time() - t0:.0f} s; errors: {errors or 'none'}",
          flush=True)
    time.sleep(2)  # the last replies' bookkeeping
    after = r.info("memory")
    grown = {name: (after[name] - before[name]) / args.chats for name in MEMORY_FIELDS}
    used_per_chat = grown["used_memory"]
    keys_per_chat = (keyspace(r) - keys_before) / args.chats

    procs = [("gunicorn master", webhook.pid)] + [("gunicorn worker (webhook)", p) for p in c.children(webhook.pid)]
    procs += [("python worker.py", worker.pid)] + [("  its child", p) for p in c.children(worker.pid)]
    mem = []
    for name, pid in procs:
        rss, pss = c.memory_kb(pid)
        mem.append({"process": name, "pid": pid, "rss_mb": rss / 1024, "pss_mb": pss / 1024})

    per_chat, shared = {}, {}
    cid_set = set(cids)
    for key in r.scan_iter(count=1000):
        name = key.decode()
        owner = next((cid for cid in cid_set if cid in name), None)
        group = prefix(name, owner)
        if owner:
            per_chat.setdefault(group, []).append(usage(r, key))
        else:
            shared.setdefault(group, []).append(usage(r, key))
    per_chat_avg = {g: sum(v) / args.chats for g, v in sorted(per_chat.items())}
    history = per_chat_avg.get("wa:history:*", 0)
    panel_log = per_chat_avg.get("wa:log:*", 0)
    own_state = sum(v for g, v in per_chat_avg.items() if g != "wa:log:*")
    dedupe = {g: sum(v) / args.chats for g, v in shared.items() if g in ("wa:seen:*", "wa:ours:*")}
    others = {g: {"keys": len(v), "bytes": sum(v)} for g, v in sorted(shared.items()) if g not in dedupe}
    hist_entries = r.llen(f"wa:history:{cids[0]}")
    no_ttl = c.keys_without_ttl(r)
    full = r.info("memory")["used_memory"]
    r.flushall()  # what the keys held goes; what stays is Redis's own (its Lua heap, buffers): no chat's
    time.sleep(0.5)
    empty = r.info("memory")["used_memory"]
    stays_per_chat = (empty - before["used_memory"] + keys_before) / args.chats  # the warm-up's keys went too
    freed_per_chat = (full - empty - keys_before) / args.chats

    print()
    baseline, commit = c.baseline_figure("memory_used_per_chat_bytes")
    keys_baseline, _ = c.baseline_figure("memory_keyspace_per_chat_bytes")
    print(f"(a) Redis used_memory growth per chat after {args.exchanges} exchanges of ~{CHARS} characters each way: "
          f"{used_per_chat:,.0f} B (target <= 8 KB; baseline {commit}: "
          f"{'-' if baseline is None else f'{baseline:,.0f} B'})")
    print(f"    of which in keys (MEMORY USAGE of every key, growth per chat): {keys_per_chat:,.0f} B (baseline "
          f"{'-' if keys_baseline is None else f'{keys_baseline:,.0f} B'}); FLUSHALL at the end frees "
          f"{freed_per_chat:,.0f} B per chat, and {stays_per_chat:,.0f} B per chat stays after it (Redis's own growth, "
          "not kept for any chat)")
    print("    growth per chat of INFO memory: " + ", ".join(f"{name} {value:,.0f}" for name, value in grown.items()))
    print()
    print(f"(b) Redis bytes per chat after {args.exchanges} exchanges of ~{CHARS} characters each way "
          f"(MEMORY USAGE, mean of {args.chats} chats; the history keeps {hist_entries} entries)")
    rows = [[g, f"{v:,.0f}"] for g, v in per_chat_avg.items()]
    rows += [["= the chat's own state (every key above but wa:log:*)", f"{own_state:,.0f}"],
             ["  of which the record / history list", f"{history:,.0f}"],
             ["the panel's conversation log wa:log:* (apart)", f"{panel_log:,.0f}"]]
    rows += [[f"24 h dedupe/echo keys {g} (c)", f"{v:,.0f}"] for g, v in dedupe.items()]
    print(c.table(rows, ["key (per chat)", "bytes"]))
    print()
    print("Keys no chat owns (all chats together): " + ", ".join(f"{g} {v['keys']} key(s) {v['bytes']:,} B"
                                                                 for g, v in others.items()))
    print()
    print(c.table([[m["process"], m["pid"], f"{m['rss_mb']:.1f}", f"{m['pss_mb']:.1f}"] for m in mem],
                  ["process", "pid", "RSS MB", "PSS MB"]))
    print()
    print("Keys without a TTL after the run (pattern: count): " + ", ".join(f"{p}: {n}" for p, n in no_ttl.items()))
    figures = {"memory_used_per_chat_bytes": used_per_chat, "memory_keyspace_per_chat_bytes": keys_per_chat,
               "memory_stays_after_flushall_per_chat_bytes": stays_per_chat, "memory_own_state_bytes": own_state,
               "memory_history_bytes": history, "memory_panel_log_bytes": panel_log,
               "memory_dedupe_bytes": sum(dedupe.values()), "memory_history_entries": hist_entries,
               "rss_webhook_worker_mb": next((m["rss_mb"] for m in mem if m["process"].startswith("gunicorn worker")), None),
               "rss_worker_mb": next((m["rss_mb"] for m in mem if m["process"] == "python worker.py"), None)}
    c.save("memory", {"info_memory_growth_per_chat": grown, "per_chat": per_chat_avg, "dedupe": dedupe, "others": others, "processes": mem,
                      "keys_without_ttl": no_ttl, "errors": errors, "chats": args.chats,
                      "exchanges": args.exchanges}, figures)


if __name__ == "__main__":
    c.main(body, time_limit=240)
