"""worker.py's job under RQ's default Worker, which forks a "work horse" per job, for comparison.

    python bench/fork_worker.py        # same environment as `python worker.py`

Only for bench/bench_workers.py: worker.py runs jobs in its own process (SimpleWorker); this
measures what a fork per job would cost. Same job function, same context made once per process.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rq import Worker  # noqa: E402

import worker  # noqa: E402  (imported by name, as RQ resolves "worker.answer_chat")
from config import REQUIRED_FOR_REPLYING, load_settings, setup_logging  # noqa: E402


def main():
    settings = load_settings(require=("REDIS_URL", *REQUIRED_FOR_REPLYING))
    setup_logging(settings)
    worker._context = ctx = worker.make_context(settings)
    Worker([ctx.queue], connection=ctx.redis).work(with_scheduler=True, logging_level=settings.log_level.upper())


if __name__ == "__main__":
    main()
