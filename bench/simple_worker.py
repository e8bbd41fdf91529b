"""worker.py's worker, but as rq.SimpleWorker: jobs run in the worker process itself, no fork per job.

    python bench/simple_worker.py        # same environment as `python worker.py`

Only for bench/bench_workers.py, to measure RQ's per-job fork overhead against the default
Worker that worker.py uses. Same job function (`worker.answer_chat`), same context made once per
process, same queue, scheduler and maintenance sweep (buffer.rescue_overdue); worker.py unchanged.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis as redis_lib  # noqa: E402
from rq import SimpleWorker  # noqa: E402

import buffer  # noqa: E402
import worker  # noqa: E402  (imported by name, as RQ resolves "worker.answer_chat")
from config import REQUIRED_FOR_REPLYING, load_settings, setup_logging  # noqa: E402


class SimpleBotWorker(SimpleWorker):
    """rq.SimpleWorker plus worker.BotWorker's sweep for lost jobs at each maintenance tick."""

    bot_settings = None

    def run_maintenance_tasks(self):
        try:
            buffer.rescue_overdue(self.connection, self.queues[0], self.bot_settings)
        except redis_lib.RedisError as error:
            self.log.warning("sweep for lost jobs failed: %s", error)
        super().run_maintenance_tasks()


def main():
    settings = load_settings(require=("REDIS_URL", *REQUIRED_FOR_REPLYING))
    setup_logging(settings)
    worker._context = worker.make_context(settings)
    ctx = worker._context
    simple = SimpleBotWorker(
        [ctx.queue],
        connection=ctx.redis,
        maintenance_interval=settings.sweep_seconds,
        worker_ttl=settings.sweep_seconds + 15,
    )
    simple.bot_settings = settings
    simple.work(with_scheduler=True, logging_level=settings.log_level.upper())


if __name__ == "__main__":
    main()
