"""From "this chat is due" to an RQ job: every worker polls `wa:due` and enqueues the chats whose time has come.

`wa:due` (buffer.py) is the one place that says when each chat needs work next: its debounce
deadline, a retry, the next part of a reply, the end of a running job's lease. Each dispatcher
looks when the earliest chat is due (at least every POLL_SECONDS), so a burst's job starts within
milliseconds of its deadline and never before, without RQ's scheduled registry (whole seconds, one
look a second) and without a job that starts early and sleeps.

A chat has at most one job waiting in the queue: `wa:queued` remembers it (job id, and the time
the chat was moved to). Dispatching moves the chat's time SWEEP_SECONDS ahead; when that time
comes and the chat's job still waits in RQ's queue (a backlog), the chat is only moved ahead
again, never queued twice, so a backlog never grows the queue. When the job is gone (its worker
killed, Redis restarted, or it ran and found nothing to do) the chat is queued again. The job's id
is its ticket: it may claim the chat before its time (buffer.claim) only while the chat is still
where the dispatcher put it, so a message written after dispatch makes the job stale. The job's
lease starts when it claims the chat, not when it was queued.
"""

import logging
import threading
import time
import uuid

from redis.exceptions import RedisError
from rq import Queue

import buffer

log = logging.getLogger(__name__)

JOB = "worker.answer_chat"  # by name: the dispatcher needs none of the job's imports
POLL_SECONDS = 0.2  # the longest a dispatcher waits: a chat made due sooner than that is seen by then
MIN_WAIT_SECONDS = 0.02  # chats due within this much of each other go out in one round trip
BATCH = 500  # chats per round trip; a longer backlog is dispatched in several, without waiting in between

# KEYS: due, queued, RQ's intermediate queue (jobs taken but not yet started)
# ARGV: now, the time a chat is looked at again, batch, a token for this call's job ids, RQ's job key prefix
# Returns the next time a chat is due ('' when none), how many were due, and the chats to enqueue.
DISPATCH_SCRIPT = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local fresh = {}
for _, cid in ipairs(due) do
  local mark = redis.call('HGET', KEYS[2], cid)
  local job = mark and string.match(mark, '^(%S+)')
  if not (job and redis.call('HGET', ARGV[5] .. job, 'status') == 'queued' and not redis.call('LPOS', KEYS[3], job)) then
    job = 'chat-' .. cid .. '-' .. ARGV[4]  -- none waits in the queue: a new job
    fresh[#fresh + 1] = cid
  end
  redis.call('ZADD', KEYS[1], ARGV[2], cid)
  redis.call('HSET', KEYS[2], cid, job .. ' ' .. ARGV[2])
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {first[2] or '', #due, unpack(fresh)}
"""


def job_options(settings):
    """RQ options for a chat job: a timeout that fits its worst case (each slow step renews the lease), no result kept."""
    return dict(timeout=settings.job_timeout_seconds, result_ttl=0, failure_ttl=86400)


def dispatch_due(redis, queue, settings, now=None):
    """Enqueue one job for each chat whose time has come and that has none waiting; returns the chat refs enqueued.

    The script and the jobs are two round trips: a crash between them loses only jobs, and their
    chats come due again SWEEP_SECONDS later.
    """
    return _dispatch(redis, queue, settings, now)[2]


def job_id(cid, token):
    """The id of a chat's job (its ticket), as DISPATCH_SCRIPT makes it."""
    return f"chat-{cid}-{token}"


def _dispatch(redis, queue, settings, now=None):
    """(when the next chat is due or None, how many chats were due, the chat refs enqueued now)."""
    now = time.time() if now is None else now
    token = uuid.uuid4().hex[:12]
    result = redis.register_script(DISPATCH_SCRIPT)(
        keys=[buffer.DUE, buffer.QUEUED, queue.intermediate_queue_key],
        args=[repr(now), repr(now + settings.sweep_seconds), BATCH, token, queue.job_class.redis_job_namespace_prefix])
    cids = [cid.decode() for cid in result[2:]]
    if cids:
        options = job_options(settings)
        queue.enqueue_many([Queue.prepare_data(JOB, args=(cid, job_id(cid, token)), job_id=job_id(cid, token),
                                               **options) for cid in cids])
    return (float(result[0]) if result[0] else None), int(result[1]), cids


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
                upcoming, due, _ = _dispatch(self.redis, self.queue, self.settings)
                if due == BATCH:
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
