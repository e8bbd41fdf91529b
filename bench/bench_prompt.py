"""Prompt prefix stability for Gemini's implicit cache, and prompt size as a conversation grows.

    python bench/bench_prompt.py [--code DIR] [--chats 2] [--exchanges 40]     # about 60 s

Real redis-server, `gunicorn webhook:app` and one `python worker.py` (DEBOUNCE_SECONDS=0.2,
typing off, the shipped prompts/system.md). CHATS customers talk in parallel, EXCHANGES messages
of 200 characters each, each after the previous reply; FakeGemini answers 200 characters and
keeps every request (JSON: systemInstruction, contents, tools).

For each request after a chat's first, it "extends" the chat's previous request when its
systemInstruction and tools are equal to the previous one's and its `contents` starts with the
previous `contents` unchanged, element by element: only then can Gemini's implicit context cache
reuse the previous prompt's prefix. Printed: the share of requests that extend, and the prompt
size (characters of text in `contents`) per exchange: its maximum and where it plateaus (the
median over the last 10 exchanges, and the first exchange that reaches 90 % of the maximum).
"""

import argparse
import re

import common as c

CHARS = 200


def text_chars(contents):
    return sum(len(p.get("text", "")) for content in contents for p in content.get("parts", []))


def body():
    cli = argparse.ArgumentParser()
    cli.add_argument("--chats", type=int, default=2)
    cli.add_argument("--exchanges", type=int, default=40)
    args = cli.parse_args()

    url, r = c.start_redis()
    evolution, gemini = c.start_fakes(gemini_responder=lambda req: c.sample_text(CHARS, 7 + len(req["contents"])))
    env = c.bot_env(url, evolution.url, gemini.url, debounce_seconds=0.2, time_per_char_ms=0, send_presence="false")
    webhook, port = c.start_webhook(env)
    c.start_worker(env)
    c.wait_workers(r, 1)

    numbers = [c.chat_number(4242 + i) for i in range(args.chats)]
    errors = c.converse(port, evolution, numbers, args.exchanges,
                        lambda i, k: (f"cliente {i} vez {k:02d} " + c.sample_text(CHARS, 100 * i + k))[:CHARS])

    by_chat = {}  # chat -> its requests in order
    for req in list(gemini.requests):
        b = req.get("body") or {}
        last = " ".join(p.get("text", "") for p in (b.get("contents") or [{}])[-1].get("parts", []))
        m = re.search(r"cliente (\d+) vez", last)
        if m:
            by_chat.setdefault(int(m.group(1)), []).append(b)
    extends, pairs, sizes = 0, 0, {}
    rows = []
    for chat, reqs in sorted(by_chat.items()):
        for k, b in enumerate(reqs):
            size = text_chars(b.get("contents") or [])
            sizes.setdefault(k + 1, []).append(size)
            if k == 0:
                continue
            prev = reqs[k - 1]
            pc, cc = prev.get("contents") or [], b.get("contents") or []
            ok = (b.get("systemInstruction") == prev.get("systemInstruction") and b.get("tools") == prev.get("tools")
                  and len(cc) >= len(pc) and cc[:len(pc)] == pc)
            pairs += 1
            extends += ok
            if chat == 0 and (k + 1 in (1, 2, 5, 10, 15, 20, 21, 22, 25, 30, 35, 40) or k + 1 == len(reqs)):
                rows.append([k + 1, len(cc), size, "yes" if ok else "no"])
    per_exchange = [max(v) for _, v in sorted(sizes.items())]
    top = max(per_exchange) if per_exchange else 0
    plateau = c.median(per_exchange[-10:]) if per_exchange else 0
    reached = next((k + 1 for k, s in enumerate(per_exchange) if s >= 0.9 * top), None)
    share = extends / pairs if pairs else None
    system = len(gemini.system_text(-1) or "") if gemini.requests else 0
    print(f"{args.chats} chat(s) x {args.exchanges} exchanges; {len(gemini.requests)} Gemini requests; "
          f"errors: {errors or 'none'}")
    print(c.table(rows, ["exchange (chat 0)", "contents", "contents chars", "extends previous"]))
    print()
    print(f"Requests that extend the chat's previous request unchanged: {extends}/{pairs} = "
          f"{100 * share:.0f} %" if pairs else "no pairs")
    print(f"Prompt size (chars of contents): max {top:,} (first >= 90 % of it at exchange {reached}); "
          f"median of the last 10 exchanges {plateau:,.0f}; system instruction {system:,} chars")
    figures = {"prompt_extends_share": share, "prompt_max_chars": top, "prompt_plateau_chars": plateau,
               "prompt_plateau_exchange": reached, "prompt_system_chars": system}
    c.save("prompt", {"sizes_by_exchange": per_exchange, "extends": extends, "pairs": pairs, "errors": errors,
                      "chats": args.chats, "exchanges": args.exchanges}, figures)


if __name__ == "__main__":
    c.main(body, time_limit=175)
