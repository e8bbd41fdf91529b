"""From "this chat is due" to an RQ job: every worker polls `wa:due` and enqueues the chats whose time has come.

`wa:due` (buffer.py) is the one place that says when each chat needs work next: its debounce
deadline, a retry, the next part of a reply, the end of a running job's lease. Each dispatcher
looks when the earliest chat is due (at least every POLL_SECONDS), so a burst's job starts within
milliseconds of its deadline and never before, without RQ's scheduled registry (whole seconds, one
look a second) and without a job that starts early and sleeps. Dispatching moves the chat's time
SWEEP_SECONDS ahead and hands the job that new time as its ticket: if the job is lost (a worker
killed, Redis restarted) the chat comes due again and is dispatched again, and a job whose chat
moved on meanwhile finds its ticket stale.
"""

import logging
import threading
import time

from redis.exceptions import RedisError
from rq import Queue

import buffer

log = logging.getLogger(__name__)

JOB = "worker.answer_chat"  # by name: the dispatcher needs none of the job's imports
POLL_SECONDS = 0.2  # the longest a dispatcher waits: a chat made due sooner than that is seen by then
MIN_WAIT_SECONDS = 0.02  # chats due within this much of each other go out in one round trip
BATCH = 500  # chats per round trip; a longer backlog is dispatched in several, without waiting in between

# KEYS: due; ARGV: now, ticket (the time a lost job's chat comes due again), batch
# Returns the next time a chat is due ('' when none) and the chats dispatched.
DISPATCH_SCRIPT = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, cid in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], cid) end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {first[2] or '', unpack(due)}
"""


def job_options(settings):
    """RQ options for a chat job: a timeout that fits its worst case (each slow step renews the lease), no result kept."""
    return dict(timeout=settings.job_timeout_seconds, result_ttl=0, failure_ttl=86400)


def dispatch_due(redis, queue, settings, now=None):
    """Enqueue one job for each chat whose time has come; returns the chat refs dispatched.

    The script and the jobs are two round trips: a crash between them loses only jobs, and their
    chats come due again SWEEP_SECONDS later.
    """
    return _dispatch(redis, queue, settings, now)[1]


def _dispatch(redis, queue, settings, now=None):
    """(when the next chat is due or None, the chat refs dispatched now)."""
    now = time.time() if now is None else now
    ticket = repr(now + settings.sweep_seconds)
    result = redis.register_script(DISPATCH_SCRIPT)(keys=[buffer.DUE], args=[repr(now), ticket, BATCH])
    cids = [cid.decode() for cid in result[1:]]
    if cids:
        options = job_options(settings)
        queue.enqueue_many([Queue.prepare_data(JOB, args=(cid, ticket), **options) for cid in cids])
    return (float(result[0]) if result[0] else None), cids


class Dispatcher(threading.Thread):
    """Runs beside the RQ worker in each worker process; any number of them share the work safely."""

    def __init__(self, redis, queue, settings):
        super().__init__(name="dispatcher", daemon=True)
        self.redis, self.queue, self.settings = redis, queue, settings
        self.stopped = threading.Event()

    def run(self):
        failing = False
        while not self.stopped.is_set():
            wait = POLL_SECONDS
            try:
                upcoming, cids = _dispatch(self.redis, self.queue, self.settings)
                if len(cids) == BATCH:
                    continue  # a backlog: the next batch at once
                if upcoming is not None:
                    wait = min(max(upcoming - time.time(), MIN_WAIT_SECONDS), POLL_SECONDS)
                if failing:
                    log.warning("dispatcher: Redis answers again")
                failing = False
            except RedisError as error:  # Redis restarting: the chats wait in wa:due (AOF) until it is back
                if not failing:
                    log.error("dispatcher: %s; trying again every %.1f s", error, POLL_SECONDS)
                failing = True
            self.stopped.wait(wait)
