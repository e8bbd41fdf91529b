"""A chat's state and the actions a person takes on it (take over, hand back, stop, forget).

Minimal version on top of buffer.py's keys, so the panel can work; the chat state machine's
rewrite replaces this module with the same functions.
"""

import time

import buffer
import chatlog

# KEYS: paused, burst, inflight, reply, deadline, attempts, lock, due; ARGV: mode (human|stop), seconds, cid
QUIET_SCRIPT = """
if ARGV[1] == 'stop' then redis.call('SET', KEYS[1], 'stop')
elseif redis.call('GET', KEYS[1]) == 'stop' then return 'stopped'
else redis.call('SET', KEYS[1], 'human', 'EX', ARGV[2]) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('ZREM', KEYS[8], ARGV[3])
return ARGV[1] == 'stop' and 'stopped' or 'paused'
"""


def state(redis, cid, now=None):
    """What the bot is doing in a chat: waiting, answering, paused, stopped or idle, and until when."""
    now = time.time() if now is None else now
    k = buffer.keys(cid)
    pipe = redis.pipeline(transaction=False)
    pipe.get(k["paused"])
    pipe.ttl(k["paused"])
    pipe.exists(k["optout"])
    pipe.exists(k["lock"])
    pipe.zscore(buffer.DUE, cid)
    pipe.get(k["deadline"])
    paused, ttl, optout, locked, due, deadline = pipe.execute()
    if paused == b"stop" or optout:
        return {"state": "stopped", "until": None}
    if paused:
        return {"state": "paused", "until": now + ttl if ttl and ttl > 0 else None}
    if locked:
        return {"state": "answering", "until": None}
    if due is not None:
        return {"state": "waiting", "until": float(deadline) if deadline else float(due)}
    return {"state": "idle", "until": None}


def _quiet(redis, cid, mode, seconds):
    k = buffer.keys(cid)
    result = redis.register_script(QUIET_SCRIPT)(
        keys=[k["paused"], k["burst"], k["inflight"], k["reply"], k["deadline"], k["attempts"], k["lock"],
              buffer.DUE],
        args=[mode, max(int(seconds), 1), cid],
    )
    return result.decode() if isinstance(result, bytes) else result


def take_over(redis, cid, settings):
    """A person answers: the bot is quiet for HANDOFF_PAUSE_MINUTES, drops what was waiting and its running job."""
    return _quiet(redis, cid, "human", settings.handoff_pause_minutes * 60)


def hand_back(redis, cid):
    """The bot answers again: clears a pause, a stop and the customer's opt-out."""
    k = buffer.keys(cid)
    redis.delete(k["paused"], k["optout"])
    return "resumed"


def stop(redis, cid):
    """The bot stays quiet in this chat for good, until handed back."""
    return _quiet(redis, cid, "stop", 1)


def forget(redis, cid):
    """Erase everything kept about one chat (LGPD), like `worker.py forget`; returns how many keys went."""
    pipe = redis.pipeline()
    pipe.delete(*buffer.keys(cid).values())
    pipe.zrem(buffer.DUE, cid)
    chatlog.erase(pipe, cid)
    return pipe.execute()[0]
