"""A 20,000-character knowledge text: prompt characters sent inline per reply, and the share of prompt tokens
Gemini reads from the context cache, with explicit caching off and on.

    python bench/bench_knowledge.py [--code DIR] [--chats 2] [--exchanges 10]     # about 40 s

Real redis-server, `gunicorn webhook:app` and one `python worker.py` (DEBOUNCE_SECONDS=0.2, typing
off), the shipped prompts/system.md copied beside a prompts/knowledge.md of 20,000 characters (a
bakery's price list). Run twice on a fresh Redis: GEMINI_CACHE_MIN_TOKENS=-1 (the text inline with
every reply), then the default (a context cache once persona + knowledge pass the model's minimum).
CHATS customers talk in parallel, EXCHANGES messages of 120 characters each, each after the previous reply.

From FakeGemini's recorded requests, per reply: the characters of text sent inline (system
instruction + contents) and the cached share = cached tokens / prompt tokens. FakeGemini counts
words as tokens (system instruction, contents and, for a request naming a cache, the cache's words),
so the share is of words, not of Gemini's real tokens; real tokens are about 4 characters each.
The bot's own counters (/metrics: whatsapp_gemini_prompt_tokens_total) are printed beside it.
"""

import argparse
import shutil

import common as c

KNOWLEDGE_CHARS = 20_000
CHARS = 120


def bakery(chars):
    """A price list of `chars` characters."""
    lines, n = ["## Produtos e preços"], 0
    while sum(len(line) + 1 for line in lines) < chars:
        n += 1
        lines.append(f"- Bolo {n} de fubá com goiabada: fatia R$ {n % 40 + 5},50, inteiro R$ {n % 90 + 30},00")
    return "\n".join(lines)[:chars]


def text_chars(body):
    system = sum(len(p.get("text", "")) for p in (body.get("systemInstruction") or {}).get("parts", []))
    return system + sum(len(p.get("text", "")) for content in body.get("contents") or [] for p in content.get("parts", []))


def words(content):
    return sum(len(p.get("text", "").split()) for p in (content or {}).get("parts", []))


def phase(label, args, prompts, **overrides):
    url, r = c.start_redis(f"redis-{label}")
    evolution, gemini = c.start_fakes(gemini_responder=lambda req: c.sample_text(CHARS, len(req["contents"])))
    env = c.bot_env(url, evolution.url, gemini.url, debounce_seconds=0.2, time_per_char_ms=0, send_presence="false",
                    system_prompt_file=prompts / "system.md", **overrides)
    webhook, port = c.start_webhook(env, name=f"webhook-{label}")
    worker = c.start_worker(env, name=f"worker-{label}")
    c.wait_workers(r, 1)
    numbers = [c.chat_number(5150 + i) for i in range(args.chats)]
    errors = c.converse(port, evolution, numbers, args.exchanges,
                        lambda i, k: (f"cliente {i} vez {k:02d} " + c.sample_text(CHARS, 10 * i + k))[:CHARS])
    rows = []
    for req in list(gemini.requests):
        body = req.get("body") or {}
        cache = gemini.caches.get(body.get("cachedContent") or "")
        cached = cache["tokens"] if cache else 0
        prompt = words(body.get("systemInstruction")) + sum(words(x) for x in body.get("contents") or []) + cached
        rows.append({"inline_chars": text_chars(body), "cached_share": cached / prompt if prompt else 0,
                     "cached": bool(cache)})
    total = {k.decode(): int(v) for k, v in r.hgetall("wa:stats:total").items()}
    c.stop(webhook)
    c.stop(worker)
    return {"label": label, "rows": rows, "errors": errors, "caches_made": len(gemini.cache_creations()),
            "counted_cached": total.get("cached_tokens", 0), "counted_uncached": total.get("uncached_tokens", 0)}


def body():
    cli = argparse.ArgumentParser()
    cli.add_argument("--chats", type=int, default=2)
    cli.add_argument("--exchanges", type=int, default=10)
    args = cli.parse_args()

    prompts = c.tmpdir() / "prompts"
    prompts.mkdir()
    shutil.copy(c.CODE / "prompts" / "system.md", prompts / "system.md")
    (prompts / "knowledge.md").write_text(bakery(KNOWLEDGE_CHARS) + "\n")

    results = [phase("inline", args, prompts, gemini_cache_min_tokens=-1), phase("cached", args, prompts)]
    out, figures = [], {}
    for result in results:
        rows = result["rows"]
        steady = [row for row in rows if row["cached"]] or rows
        counted = result["counted_cached"] + result["counted_uncached"]
        out.append([result["label"], len(rows), sum(1 for row in rows if not row["cached"]),
                    float(c.median([row["inline_chars"] for row in rows])),
                    float(c.median([row["inline_chars"] for row in steady])),
                    f"{100 * c.median([row['cached_share'] for row in steady]):.1f} %",
                    f"{100 * result['counted_cached'] / counted:.1f} %" if counted else "-",
                    result["caches_made"], "; ".join(result["errors"]) or "none"])
        figures[f"knowledge_{result['label']}_chars_per_reply"] = c.median([row["inline_chars"] for row in steady])
        figures[f"knowledge_{result['label']}_cached_share"] = c.median([row["cached_share"] for row in steady])
    print(f"knowledge {KNOWLEDGE_CHARS:,} chars; {args.chats} chat(s) x {args.exchanges} exchanges of {CHARS} chars; "
          "FakeGemini counts words as tokens")
    print(c.table(out, ["run", "replies", "inline replies", "inline chars/reply (all)", "inline chars/reply (cached)",
                        "cached share/reply (words)", "bot's counters: cached share", "caches made", "errors"]))
    c.save("knowledge", {"runs": results}, figures)


if __name__ == "__main__":
    c.main(body, time_limit=175)
