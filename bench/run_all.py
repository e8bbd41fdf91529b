"""Run every benchmark, one after the other, then print one table: figure | target | baseline | measured | met.

    python bench/run_all.py                                  # about 10 minutes
    python bench/run_all.py webhook memory                   # only some (names as in SCRIPTS)
    python bench/run_all.py --code DIR                       # the bot's processes from another checkout
    python bench/run_all.py --code /work/wt/base --save-baseline   # write bench/baseline.json

Each script runs in its own process group and cleans up its own processes; Ctrl-C or SIGTERM here
is passed on to the running script (which then stops its redis-server, gunicorn and workers) and
nothing further starts. Output and JSON go to bench/results/ (git-ignored); the table is also
written to bench/results/summary.md. The baseline column is bench/baseline.json (committed): the
same scripts run against the code before issue 14's change.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
BASELINE = BENCH / "baseline.json"

SCRIPTS = {  # name: (script and arguments, result file it writes, time limit in seconds)
    "webhook": (["bench_webhook.py"], "webhook", 200),
    "redis_ops": (["bench_redis_ops.py"], "redis_ops", 150),
    "debounce": (["bench_debounce.py"], "debounce", 300),
    "typing": (["bench_typing.py"], "typing", 150),
    "memory": (["bench_memory.py"], "memory", 150),
    "prompt": (["bench_prompt.py"], "prompt", 150),
    "busy_hour": (["bench_busy_hour.py"], "busy_hour", 900),
}


def _ms(v):
    return f"{v:.0f} ms"


def _s(v):
    return f"{v:.2f} s"


def _n(v):
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def _x(v):
    return f"{v:.2f}x"


def _kb(v):
    return f"{v / 1024:.1f} KB"


def _pct(v):
    return f"{100 * v:.0f} %"


def _chars(v):
    return f"{v:,.0f} chars"


def _all(figs, shape, key):
    """`exactly one call/reply` holds for every chat of the shape."""
    return figs.get(f"debounce_{shape}_{key}") == figs.get(f"debounce_{shape}_chats")


# (figure key, label, target, check(measured, baseline, all measured figures) -> True/False/None, format)
FIGURES = []
for _shape, _title in (("pairs", "pairs (2 msgs 0.3 s apart)"), ("spread", "spread (3 msgs, gaps 0.5-3 s)")):
    FIGURES += [
        (f"debounce_{_shape}_p50_s", f"Debounce lateness p50, 1,000 chats/20 s, 2 workers, {_title}", "-", None, _s),
        (f"debounce_{_shape}_p99_s", f"Debounce lateness p99, {_shape}", "<= 0.5 s", lambda m, b, f: m <= 0.5, _s),
        (f"debounce_{_shape}_max_s", f"Debounce lateness max, {_shape}", "-", None, _s),
        (f"debounce_{_shape}_early", f"Debounce: calls before the window closed (EARLY), {_shape}", "0",
         lambda m, b, f: m == 0, _n),
        (f"debounce_{_shape}_exactly_one_call", f"Debounce: chats with exactly 1 Gemini call, {_shape}", "all",
         lambda m, b, f, s=_shape: _all(f, s, "exactly_one_call"), _n),
        (f"debounce_{_shape}_exactly_one_reply", f"Debounce: chats with exactly 1 reply, {_shape}", "all",
         lambda m, b, f, s=_shape: _all(f, s, "exactly_one_reply"), _n),
        (f"debounce_{_shape}_job_ms", f"Worker time per job (RQ total_working_time / jobs), {_shape}",
         "no sleeping in a job", None, _ms),
        (f"debounce_{_shape}_worker_busy_s", f"Worker busy seconds in all (2 workers), {_shape}", "-", None, _s),
    ]
FIGURES += [
    ("typing_replies_per_worker_minute", "3-part replies (4 s typing per part) per worker-minute", ">= 3x baseline",
     lambda m, b, f: None if b is None else m >= 3 * b, lambda v: f"{v:.1f}"),
    ("typing_chats_out_of_order", "3-part replies: chats whose parts came out of order", "0", lambda m, b, f: m == 0, _n),
    ("typing_parts_sent_twice", "3-part replies: parts sent twice", "0", lambda m, b, f: m == 0, _n),
    ("typing_parts_without_composing", "3-part replies: parts sent without a 'composing' before them", "0",
     lambda m, b, f: m == 0, _n),
    ("typing_job_ms", "3-part replies: worker time per job", "-", None, _ms),
    ("webhook_ratio_bursts", "Webhook msgs/s vs floor, bursts of 3 (median of 5 alternating pairs)", ">= 0.8x",
     lambda m, b, f: m >= 0.8, _x),
    ("webhook_ratio_new", "Webhook msgs/s vs floor, every message a new chat", "-", None, _x),
    ("webhook_ratio_followups", "Webhook msgs/s vs floor, follow-ups to waiting chats", "-", None, _x),
    ("webhook_p99_ms_300", "Webhook latency p99 at a steady 300 msgs/s", "-", None, lambda v: f"{v:.1f} ms"),
    ("round_trips_new", "Redis round trips per message: new chat", "<= 2", lambda m, b, f: m <= 2.05, lambda v: f"{v:.2f}"),
    ("round_trips_followup", "Redis round trips per message: follow-up", "<= 1", lambda m, b, f: m <= 1.05,
     lambda v: f"{v:.2f}"),
    ("commands_new", "Redis commands per message: new chat", "-", None, lambda v: f"{v:.0f}"),
    ("commands_followup", "Redis commands per message: follow-up", "-", None, lambda v: f"{v:.0f}"),
    ("worker_round_trips_per_reply", "Redis round trips per reply, worker side", "-", None, lambda v: f"{v:.0f}"),
    ("memory_own_state_bytes", "Redis bytes per chat, full history (30 exchanges x 200 chars): the chat's own keys "
     "(history + state, without the panel log)", "<= 8 KB", lambda m, b, f: m <= 8192, _kb),
    ("memory_history_bytes", "  of which the history list wa:history:<cid>", "-", None, _kb),
    ("memory_panel_log_bytes", "Panel conversation log wa:log:<cid> per chat (apart)", "-", None, _kb),
    ("memory_dedupe_bytes", "24 h dedupe/echo keys those 30 exchanges left, per chat", "-", None, _kb),
    ("prompt_extends_share", "Gemini requests whose prompt extends the chat's previous one unchanged", "higher is better",
     None, _pct),
    ("prompt_plateau_chars", "Prompt size (contents) where it plateaus (median of the last 10 of 40 exchanges)", "-",
     None, _chars),
    ("prompt_max_chars", "Prompt size (contents), max over 40 exchanges", "-", None, _chars),
]

FIGURES += [
    ("rush_p99_s", "Lunch rush: 200 chats due within 3 s, Gemini 3 s per call, 1 worker process: reply lateness p99",
     "<= 5 s", lambda m, b, f: m <= 5, _s),
    ("rush_p50_s", "Lunch rush: reply lateness p50 (3 s is Gemini's own time)", "-", None, _s),
    ("rush_max_s", "Lunch rush: reply lateness max", "-", None, _s),
    ("rush_gemini_p99_s", "Lunch rush: Gemini asked, p99 after the window", "-", None, _s),
    ("rush_exactly_one_call", "Lunch rush: chats with exactly 1 Gemini call", "all 200", lambda m, b, f: m == 200, _n),
    ("rush_exactly_one_reply", "Lunch rush: chats with exactly 1 reply", "all 200", lambda m, b, f: m == 200, _n),
    ("rush_pss_peak_mb", "Lunch rush: worker service PSS at peak (all its processes)", "<= 250 MB",
     lambda m, b, f: m <= 250, lambda v: f"{v:.0f} MB"),
    ("rush_pss_idle_mb", "Lunch rush: worker service PSS idle", "-", None, lambda v: f"{v:.0f} MB"),
    ("rush_worker_cpu_ms_per_chat", "Lunch rush: worker CPU per chat", "-", None, _ms),
    ("backlog_answered_in_window", "Backlog: 12,000 new chats as fast as the webhook takes them, 2 workers, "
     "Gemini instant: answered within 300 s of the last post", "all 12,000", lambda m, b, f: m == 12000, _n),
    ("backlog_drain_s", "Backlog: seconds from the last post until all were answered (or the wait ended)", "<= 300 s",
     lambda m, b, f: m <= 300 and f.get("backlog_answered_in_window") == 12000, _s),
    ("backlog_exactly_one_reply", "Backlog: chats with exactly 1 reply", "all 12,000", lambda m, b, f: m == 12000, _n),
    ("backlog_queue_max_ratio", "Backlog: RQ queue at its longest / chats", "<= 1.1x", lambda m, b, f: m <= 1.1, _x),
]

current = None


class Background(threading.Thread):
    """Samples, every second, the machine's busy CPU and that of this run's own process tree.

    The difference is other sessions' work (another developer's tests) on the shared 2 cores: the
    noise next to each script's figures. CPU of processes that end between samples is missed (< 1 s each).
    """

    def __init__(self):
        super().__init__(daemon=True)
        self.samples, self.stopped = [], threading.Event()

    @staticmethod
    def _read():
        tck = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / tck
        procs = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        rest = f.read().rsplit(")", 1)[1].split()
                    procs[int(entry)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / tck)
                except (OSError, IndexError, ValueError):
                    pass
        return time.monotonic(), busy, procs

    def run(self):
        me = os.getpid()
        last = self._read()
        while not self.stopped.wait(1.0):
            now = self._read()
            mine, parents = set(), {pid: ppid for pid, (ppid, _) in now[2].items()}
            for pid in now[2]:
                p, seen = pid, 0
                while p and p != me and seen < 50:
                    p, seen = parents.get(p, 0), seen + 1
                if p == me:
                    mine.add(pid)
            own = sum(now[2][p][1] - last[2][p][1] for p in mine if p in last[2])
            wall = now[0] - last[0]
            self.samples.append((now[0], (now[1] - last[1]) / wall, own / wall))
            last = now

    def between(self, t0, t1):
        """Mean machine-busy and other-sessions cores between two monotonic times."""
        rows = [(busy, max(busy - own, 0)) for t, busy, own in self.samples if t0 < t <= t1]
        if not rows:
            return None, None
        return sum(r[0] for r in rows) / len(rows), sum(r[1] for r in rows) / len(rows)


def forward(signum, _frame):
    """Pass Ctrl-C / SIGTERM to the running script's process group; it cleans up after itself."""
    if current is not None and current.poll() is None:
        try:
            os.killpg(current.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    raise KeyboardInterrupt


watch = Background()
background = {}  # script name: mean cores other sessions used while it ran


def run(name, args, limit, code):
    global current
    extra = ["--code", code] if code else []
    print(f"\n===== {name}: python bench/{' '.join(args + extra)}", flush=True)
    started = time.monotonic()
    current = subprocess.Popen([sys.executable, str(BENCH / args[0]), *args[1:], *extra], cwd=BENCH.parent,
                               start_new_session=True)
    try:
        code_ = current.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        print(f"{name}: over {limit} s, stopping it", flush=True)
        os.killpg(current.pid, signal.SIGTERM)
        code_ = current.wait(timeout=30)
    busy, others = watch.between(started, time.monotonic())
    noise = f"; machine busy {busy:.2f} cores, other sessions {others:.2f} cores" if busy is not None else ""
    print(f"===== {name}: exit {code_} after {time.monotonic() - started:.0f} s{noise}", flush=True)
    background[name] = others
    return code_


def load_results(names, since):
    """Figures and run metadata of the result files the scripts wrote in this run."""
    figures, meta = {}, {}
    for name in names:
        path = RESULTS / f"{SCRIPTS[name][1]}.json"
        if path.exists() and path.stat().st_mtime >= since:
            data = json.loads(path.read_text())
            figures.update(data.get("figures", {}))
            meta = {k: data.get(k) for k in ("code", "commit", "date")}
    return figures, meta


def table(figures, baseline):
    lines = ["| figure | target | baseline | measured | met |", "|---|---|---|---|---|"]
    for key, label, target, check, show in FIGURES:
        if key not in figures and key not in baseline:
            continue
        m, b = figures.get(key), baseline.get(key)
        met = "-"
        if check is not None and m is not None:
            verdict = check(m, b, figures)
            met = "?" if verdict is None else ("yes" if verdict else "NO")
        lines.append(f"| {label} | {target} | {'-' if b is None else show(b)} | "
                     f"{'not measured' if m is None else show(m)} | {met} |")
    return "\n".join(lines)


def main(argv):
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("names", nargs="*", help=f"some of {list(SCRIPTS)} (default: all)")
    cli.add_argument("--code", help="checkout whose webhook.py/worker.py to run (default: this repo)")
    cli.add_argument("--save-baseline", action="store_true", help="write the figures to bench/baseline.json")
    args = cli.parse_args(argv)
    names = args.names or list(SCRIPTS)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        print(f"unknown: {unknown}; choose from {list(SCRIPTS)}")
        return 2
    code = str(Path(args.code).resolve()) if args.code else None
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    since = time.time() - 1
    started = time.monotonic()
    watch.start()
    codes = {}
    try:
        for name in names:
            script, _, limit = SCRIPTS[name]
            codes[name] = run(name, script, limit, code)
    except KeyboardInterrupt:
        if current is not None:
            try:
                current.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(current.pid, signal.SIGKILL)
        print("\ninterrupted: nothing further started")
        return 130
    figures, meta = load_results(names, since)
    saved = json.loads(BASELINE.read_text()) if BASELINE.exists() else {"figures": {}}
    if args.save_baseline:
        saved = {"commit": meta.get("commit"), "code": meta.get("code"), "date": meta.get("date"),
                 "background_cores": {n: round(v, 2) for n, v in background.items() if v is not None},
                 "note": "python bench/run_all.py --code <checkout of this commit> --save-baseline",
                 "figures": {**saved.get("figures", {}), **figures}}
        BASELINE.write_text(json.dumps(saved, indent=2, sort_keys=False) + "\n")
        print(f"\nbaseline written to {BASELINE}")
    out = table(figures, saved.get("figures", {}))
    head = (f"measured: {meta.get('commit')} ({meta.get('code')}), {meta.get('date')}; baseline: "
            f"{saved.get('commit', '-')}, {saved.get('date', '-')}; run took {time.monotonic() - started:.0f} s\n"
            "other sessions' CPU while each script ran (cores of 2): "
            + ", ".join(f"{n} {v:.2f}" for n, v in background.items() if v is not None))
    print("\n" + head + "\n\n" + out)
    (RESULTS / "summary.md").write_text(head + "\n\n" + out + "\n")
    failed = [n for n, c in codes.items() if c != 0]
    if failed:
        print(f"\nscripts that failed: {failed} (see bench/results/logs/)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
