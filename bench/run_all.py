"""Run every benchmark, one after the other, then print the table of figures.

    python bench/run_all.py                  # about 10 minutes; each script stops by itself in < 3 min
    python bench/run_all.py webhook memory   # only some (names as in SCRIPTS)

Each script runs in its own process group and cleans up its own processes; Ctrl-C or SIGTERM here
is passed on to the running script (which then stops its redis-server, gunicorn and workers) and
nothing further starts. Output and JSON go to bench/results/ (git-ignored); the table is also
written to bench/results/summary.md.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"

SCRIPTS = {  # name: (script and arguments, result files it writes, time limit in seconds)
    "webhook": (["bench_webhook.py"], ["webhook"], 200),
    "redis_ops": (["bench_redis_ops.py"], ["redis_ops"], 200),
    "state_cost": (["bench_state_cost.py"], ["state_cost"], 200),
    "debounce": (["bench_debounce.py"], ["debounce_1000"], 200),
    "debounce_light": (["bench_debounce.py", "--chats", "50"], ["debounce_50"], 200),
    "workers": (["bench_workers.py"], ["workers"], 200),
    "memory": (["bench_memory.py"], ["memory"], 200),
    "prompt": (["bench_prompt.py"], ["prompt"], 200),
}

current = None


def forward(signum, _frame):
    """Pass Ctrl-C / SIGTERM to the running script's process group; it cleans up after itself."""
    if current is not None and current.poll() is None:
        try:
            os.killpg(current.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    raise KeyboardInterrupt


def run(name, args, limit):
    global current
    print(f"\n===== {name}: python bench/{' '.join(args)}", flush=True)
    started = time.monotonic()
    current = subprocess.Popen([sys.executable, str(BENCH / args[0]), *args[1:]], cwd=BENCH.parent,
                               start_new_session=True)
    try:
        code = current.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        print(f"{name}: over {limit} s, stopping it", flush=True)
        os.killpg(current.pid, signal.SIGTERM)
        code = current.wait(timeout=30)
    print(f"===== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
    return code


def summary_rows(files, since):
    rows = []
    for stem in files:
        path = RESULTS / f"{stem}.json"
        if path.exists() and path.stat().st_mtime >= since:
            rows += json.loads(path.read_text()).get("summary", [])
    return rows


def main(argv):
    names = argv or list(SCRIPTS)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        print(f"unknown: {unknown}; choose from {list(SCRIPTS)}")
        return 2
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    since = time.time()
    codes = {}
    try:
        for name in names:
            args, _, limit = SCRIPTS[name]
            codes[name] = run(name, args, limit)
    except KeyboardInterrupt:
        if current is not None:
            try:
                current.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(current.pid, signal.SIGKILL)
        print("\ninterrupted: nothing further started")
        return 130
    rows = []
    for name in names:
        rows += summary_rows(SCRIPTS[name][1], since)
    lines = ["| figure | target | measured on this machine | baseline, same run | ratio | met | command |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['figure']} | {row['target'] or '-'} | {row['measured']} | {row['baseline'] or '-'} | "
                     f"{row['ratio'] or '-'} | {'yes' if row['ok'] else 'NO'} | `{row['command']}` |")
    table = "\n".join(lines)
    print("\n" + table)
    (RESULTS / "summary.md").write_text(table + "\n")
    failed = [n for n, code in codes.items() if code != 0]
    if failed:
        print(f"\nscripts that failed: {failed} (see bench/results/logs/)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
