"""Worker throughput with 1, 4 and 8 processes, and RQ's per-job overhead: fork (Worker) vs no fork (SimpleWorker).

    python bench/bench_workers.py                 # about 2 minutes
    python bench/bench_workers.py --only overhead
    python bench/bench_workers.py --only throughput

Real redis-server, real `python worker.py` processes (RQ SimpleWorker: jobs in the worker process,
plus the scheduler) or bench/fork_worker.py (rq.Worker, a fork per job, same job function), FakeGemini and
FakeEvolution in this process (Evolution's typing delay off: see the README for what it adds).
Chats are seeded through buffer.add_message with their debounce already over, then one job per
chat is enqueued at once (queue.enqueue, as the scheduler would), so the clock measures the
workers alone; the time runs until FakeEvolution has every reply.

* throughput: FakeGemini answers after 2 s; 8 jobs per worker; replies per minute with 1, 4 and 8
  worker processes, then 8 again with FakeEvolution holding sendText for its typing `delay`
  (TIME_PER_CHAR_MS=30 x reply length, at most MAX_TYPING_MS), as the real Evolution does.
* overhead: FakeGemini answers at once; per-job wall time in a worker, minus the time the same
  job function takes called in a loop in this process (worker.process_chat with a context of its
  own): what RQ adds per job. Target: <= 30 ms.
"""

import argparse
import time

import common as c

GEMINI_SECONDS = 2.0
JOBS_PER_WORKER = 8
OVERHEAD_JOBS = 120


class Bench:
    def __init__(self):
        self.url, self.r = c.start_redis()
        self.gemini_delay = 0.0

        def responder(_request):
            if self.gemini_delay:
                time.sleep(self.gemini_delay)
            return "Oi! O bolo de chocolate custa R$ 50 e entregamos hoje à tarde."

        self.evolution, self.gemini = c.start_fakes(gemini_responder=responder)
        # SWEEP_SECONDS=60: the lost-job sweep must not add jobs to a measured batch.
        self.env = c.bot_env(self.url, self.evolution.url, self.gemini.url, sweep_seconds=60)
        self.settings = c.settings_for(self.env)
        self.batch = 0

    def seed(self, count):
        """`count` new chats whose burst is due now; returns their chat refs."""
        import buffer

        self.batch += 1
        offset = self.batch * 100_000
        c.seed_waiting(self.r, self.settings, count, offset=offset, now=time.time() - self.settings.debounce_seconds - 1,
                       schedule=False)
        return [buffer.chat_ref(c.INSTANCE, f"{c.chat_number(offset + i)}@s.whatsapp.net") for i in range(count)]

    def run_batch(self, cids, timeout=120):
        """Enqueue one job per chat at once; seconds until every chat has its reply."""
        import buffer
        from rq import Queue

        queue = Queue("whatsapp", connection=self.r)
        before = len(self.evolution.sent_texts())
        t0 = time.monotonic()
        pipe = self.r.pipeline()
        for cid in cids:
            queue.enqueue(buffer.JOB, cid, pipeline=pipe, **buffer.job_options(self.settings))
        pipe.execute()
        c.wait_until(lambda: len(self.evolution.sent_texts()) - before >= len(cids), timeout, 0.01,
                     message=f"{len(cids)} replies")
        return time.monotonic() - t0

    def in_process(self, count):
        """ms per call of worker.process_chat in this process: the job's own cost, without RQ."""
        import os

        import worker

        os.environ.update(self.env)
        ctx = worker.make_context(self.settings)
        cids = self.seed(count + 10)
        for cid in cids[:10]:
            worker.process_chat(ctx, cid)  # warm up: connections, imports
        t0 = time.perf_counter()
        for cid in cids[10:]:
            worker.process_chat(ctx, cid)
        return (time.perf_counter() - t0) * 1000 / count


def total_cpu(pid):
    """CPU seconds of a process and its waited-for children (RQ's work horses)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / c.os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def overhead(bench):
    bench.gemini_delay = 0.0
    per_call = bench.in_process(OVERHEAD_JOBS)
    print(f"  job function in-process (no RQ): {per_call:.1f} ms per job", flush=True)
    rows, out = [], {"in_process_ms": per_call}
    for name, script in (("Worker (fork per job)", "fork_worker.py"), ("SimpleWorker (no fork; worker.py)", None)):
        proc = c.start_worker(bench.env, name="overhead-" + ("simple" if script is None else "fork"), script=script)
        c.wait_workers(bench.r, 1)
        bench.run_batch(bench.seed(5))  # warm up
        cpu0 = total_cpu(proc.pid)
        watch = c.CpuWatch()
        elapsed = bench.run_batch(bench.seed(OVERHEAD_JOBS))
        load = watch.stop()
        cpu = (total_cpu(proc.pid) - cpu0) * 1000 / OVERHEAD_JOBS
        per_job = elapsed * 1000 / OVERHEAD_JOBS
        out[name] = {"per_job_ms": per_job, "overhead_ms": per_job - per_call, "worker_cpu_ms": cpu, **load}
        rows.append([name, f"{per_job:.1f}", f"{per_job - per_call:.1f}", f"{cpu:.1f}", f"{load['background_cores']:.2f}"])
        print(f"  {name}: {per_job:.1f} ms per job, worker CPU {cpu:.1f} ms per job", flush=True)
        c.stop(proc)
        c.wait_until(lambda: not c.redis_lib.Redis.from_url(bench.url).smembers("rq:workers"), 20, 0.1,
                     message="the worker to unregister")
    print()
    print(f"RQ per-job overhead, Gemini answering at once, {OVERHEAD_JOBS} jobs, 1 worker process; target <= 30 ms")
    print(c.table([["job function alone, in-process", f"{per_call:.1f}", "", "", ""]] + rows,
                  ["how", "wall ms/job", "overhead ms/job", "worker CPU ms/job", "background cores"]))
    return out


def throughput(bench, counts=(1, 4, 8)):
    bench.gemini_delay = GEMINI_SECONDS
    procs, rows, out = [], [], {}
    reply_chars = len("Oi! O bolo de chocolate custa R$ 50 e entregamos hoje à tarde.")
    typing_s = min(reply_chars * bench.settings.time_per_char_ms, bench.settings.max_typing_ms) / 1000
    runs = [(n, False) for n in counts] + [(counts[-1], True)]
    for n, typing in runs:
        while len(procs) < n:
            procs.append(c.start_worker(bench.env, name=f"tp-worker{len(procs)}"))
        c.wait_workers(bench.r, n)
        bench.evolution.time_scale = 1.0 if typing else 0.0  # Evolution holds sendText for its `delay`
        jobs = JOBS_PER_WORKER * n
        elapsed = bench.run_batch(bench.seed(jobs), timeout=jobs * (GEMINI_SECONDS + typing_s) + 60)
        per_min = jobs / elapsed * 60
        per_job = GEMINI_SECONDS + (typing_s if typing else 0)
        ideal = n * 60 / per_job
        key = f"{n}{' +typing' if typing else ''}"
        out[key] = {"workers": n, "typing_delay_s": typing_s if typing else 0, "jobs": jobs, "seconds": elapsed,
                    "replies_per_min": per_min, "limit_per_min": ideal}
        label = f"{n}" + (f" (typing delay {typing_s:.1f} s on)" if typing else "")
        rows.append([label, jobs, f"{elapsed:.1f}", f"{per_min:.0f}", f"{ideal:.0f}", f"{per_min / ideal * 100:.0f} %",
                     f"{n * 60 / per_min - per_job:.2f}"])
        print(f"  {label} worker(s): {jobs} replies in {elapsed:.1f} s = {per_min:.0f}/min", flush=True)
    bench.evolution.time_scale = 0.0
    for proc in procs:
        c.stop(proc)
    print()
    print(f"Worker throughput, Gemini answering after {GEMINI_SECONDS:g} s (no fork, as worker.py)")
    print(c.table(rows, ["workers", "replies", "seconds", "replies/min", "limit n*60/job", "of limit",
                         "extra s/job"]))
    return out


def body():
    cli = argparse.ArgumentParser()
    cli.add_argument("--only", choices=("overhead", "throughput"))
    args = cli.parse_args()
    bench = Bench()
    data, summary = {}, []
    if args.only in (None, "overhead"):
        data["overhead"] = ov = overhead(bench)
        fork, simple = ov["Worker (fork per job)"], ov["SimpleWorker (no fork; worker.py)"]
        summary.append(c.summary_row(
            "RQ per-job overhead (0 s Gemini): SimpleWorker (worker.py) / fork per job", "<= 30 ms",
            f"{simple['overhead_ms']:.0f} ms / {fork['overhead_ms']:.0f} ms (job alone {ov['in_process_ms']:.0f} ms)",
            simple["overhead_ms"] <= 30, command="python bench/bench_workers.py --only overhead"))
    if args.only in (None, "throughput"):
        data["throughput"] = tp = throughput(bench)
        summary.append(c.summary_row(
            "Worker replies/min, Gemini 2 s: 1 / 4 / 8 workers", "grows with workers up to n*30/min",
            " / ".join(f"{tp[k]['replies_per_min']:.0f}" for k in ("1", "4", "8")) + " (Gemini limit "
            + " / ".join(f"{tp[k]['limit_per_min']:.0f}" for k in ("1", "4", "8")) + ")",
            all(tp[k]["replies_per_min"] >= 0.8 * tp[k]["limit_per_min"] for k in ("1", "4", "8")),
            command="python bench/bench_workers.py --only throughput"))
    data["summary"] = summary
    c.save("workers" + (f"_{args.only}" if args.only else ""), data)


if __name__ == "__main__":
    c.main(body, time_limit=175)
