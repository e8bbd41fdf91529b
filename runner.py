"""The RQ worker of `python worker.py`: one RQ worker that runs up to WORKER_CONCURRENCY jobs at once, in threads.

A job mostly waits on HTTP (Gemini's answer, Evolution's send, a download), so one process answers
many chats at once with threads: no fork per job (about 120 ms each, and a copy of the process),
one Redis connection blocking on the queue, one entry in `rq:workers`. RQ stays the engine: the job
hash, registries and failure handling are RQ's own (`perform_job`); only where a job runs changes.
The worker takes a job from the queue only when a thread is free, so jobs wait in RQ's queue, where
any worker process can take them. A job's timeout is a timer per thread (TimerDeathPenalty): SIGALRM
only reaches the main thread.

`run` keeps the worker going: when RQ's loop ends on an error (Redis refusing writes at its
`maxmemory`, or a timeout), it is started again after a pause; only SIGTERM or SIGINT stop it.
"""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.timeouts import TimerDeathPenalty
from rq.utils import now

log = logging.getLogger(__name__)

RESTART_SECONDS = (1, 2, 5, 10)  # pauses before starting RQ's loop again after it failed, then every 10 s


class ThreadWorker(SimpleWorker):
    """A SimpleWorker whose jobs run in a pool of `concurrency` threads; a warm shutdown waits for them."""

    death_penalty_class = TimerDeathPenalty

    def __init__(self, *args, concurrency, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_asked = False
        self._free = threading.BoundedSemaphore(concurrency)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="job")

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """Wait for a free thread (beating the worker's heart meanwhile), then for a job."""
        while not self._free.acquire(timeout=max(1, self.worker_ttl // 3)):
            self.heartbeat()
        try:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        except BaseException:
            self._free.release()
            raise
        if result is None:
            self._free.release()
        return result

    def heartbeat(self, timeout=None, pipeline=None):
        """RQ's loop beats before and after every job: with jobs by the hundred, once a second is enough."""
        if timeout is None and pipeline is None and self.last_heartbeat is not None \
                and (now() - self.last_heartbeat).total_seconds() < 1:
            return
        super().heartbeat(timeout, pipeline)

    def execute_job(self, job, queue):
        try:
            execution = self.prepare_execution(job)
            self._pool.submit(self._perform, job, queue, execution)
        except BaseException:
            self._free.release()
            raise

    def _perform(self, job, queue, execution):
        try:
            self.perform_job(job, queue, execution)
        except Exception as error:  # RQ could not record the outcome (e.g. Redis full): the chat's lease brings it back
            log.error("job %s: RQ could not record its end: %s", job.id, error)
        finally:
            self._free.release()

    def request_stop(self, signum, frame):
        self.stop_asked = True
        super().request_stop(signum, frame)

    def teardown(self):
        self._pool.shutdown(wait=True)  # warm shutdown: the jobs in hand finish first
        super().teardown()


def run(make_worker, logging_level):
    """Run RQ's loop until SIGTERM/SIGINT, starting it again (a new worker) whenever it ends on an error."""
    failures = 0
    while True:
        worker, started = make_worker(), time.monotonic()
        try:
            worker.work(logging_level=logging_level)
        except StopRequested:
            return
        except Exception as error:  # e.g. registering the worker with Redis at its maxmemory
            log.error("worker: RQ's loop failed: %s", error)
        if worker.stop_asked:
            return
        failures = 0 if time.monotonic() - started > 60 else failures
        pause = RESTART_SECONDS[min(failures, len(RESTART_SECONDS) - 1)]
        failures += 1
        log.error("worker: RQ's loop stopped (see above); starting it again in %d s", pause)
        try:
            time.sleep(pause)
        except StopRequested:  # SIGTERM during the pause: the last loop's handler raises it
            return
        if worker.stop_asked:
            return
