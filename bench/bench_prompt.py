"""Prompt size as a conversation grows over 30 exchanges: it must stop growing at the history cap.

    python bench/bench_prompt.py          # about 45 s

Real redis-server, `gunicorn webhook:app` and one `python worker.py` (DEBOUNCE_SECONDS=0, defaults
otherwise: HISTORY_MAX_TURNS=20, the shipped prompts/system.md). One customer writes 30 messages of
200 characters, each after the previous reply; FakeGemini answers each with 200 characters and
keeps every request, whose size is read here: HTTP body bytes, characters of text (history +
message + system instruction), contents, and a token estimate (characters / 4).
"""


import common as c

EXCHANGES = 30
CHARS = 200


def body():
    url, r = c.start_redis()
    evolution, gemini = c.start_fakes(gemini_responder=lambda _: c.sample_text(CHARS, 7))
    env = c.bot_env(url, evolution.url, gemini.url, debounce_seconds=0)
    settings = c.settings_for(env)
    webhook, port = c.start_webhook(env)
    c.start_worker(env)
    c.wait_workers(r, 1)

    number = c.chat_number(4242)
    rows, sizes = [], []
    for k in range(1, EXCHANGES + 1):
        text = (f"{k:02d} " + c.sample_text(CHARS, 100 + k))[:CHARS]
        status, _ = c.post(port, c.text_message(text, f"P{k}", number=number))
        assert status == 200
        c.wait_until(lambda: len(evolution.sent_texts()) >= k, 30, 0.02, message=f"reply {k}")
        req = gemini.requests[-1]
        contents = req["body"]["contents"]
        text_chars = sum(len(p.get("text", "")) for content in contents for p in content.get("parts", []))
        system = gemini.system_text(-1) or ""
        total = text_chars + len(system)
        size = {"exchange": k, "body_bytes": len(req["raw"]), "contents": len(contents),
                "history_chars": text_chars - len(text), "system_chars": len(system), "text_chars": total,
                "tokens_est": total // 4}
        sizes.append(size)
        if k in (1, 2, 5, 10, 15, 20, 21, 22, 25, 30):
            rows.append([k, size["contents"], size["history_chars"], size["system_chars"], total, size["tokens_est"],
                         size["body_bytes"]])
    cap = settings.history_max_turns
    after_cap = [s["text_chars"] for s in sizes if s["exchange"] > cap]
    plateau = max(after_cap) - min(after_cap)
    grows_until_cap = all(sizes[i]["text_chars"] < sizes[i + 1]["text_chars"] for i in range(cap))
    print(f"Prompt sent to Gemini per exchange ({CHARS}-character messages and answers, "
          f"HISTORY_MAX_TURNS={cap})")
    print(c.table(rows, ["exchange", "contents", "history chars", "system chars", "total chars", "~tokens",
                         "HTTP body bytes"]))
    print(f"After exchange {cap} the prompt varies by {plateau} characters (flat: the history cap holds); "
          f"it grew until then: {grows_until_cap}")
    top = sizes[-1]
    summary = [c.summary_row(
        "Prompt size over 30 exchanges (200-char turns)", f"stops growing at the history cap ({cap} exchanges)",
        f"grows to {top['text_chars']:,} chars (~{top['tokens_est']:,} tokens, {top['body_bytes']:,} B body) at "
        f"exchange {cap + 1}, then flat (+/- {plateau} chars)", plateau <= 10 and grows_until_cap,
        command="python bench/bench_prompt.py")]
    c.save("prompt", {"sizes": sizes, "summary": summary})


if __name__ == "__main__":
    c.main(body, time_limit=175)
