"""Conversation history per chat in Redis: capped and expiring, so a prompt cannot grow without bound.

Each turn is a JSON object `{"role": "user" | "model", "text": ...}` in a Redis list; the merged
burst is one user turn and the bot's answer one model turn.
"""

import json

from buffer import keys


def load_history(redis, cid):
    """The chat's turns, oldest first."""
    return [json.loads(turn) for turn in redis.lrange(keys(cid)["history"], 0, -1)]


def append_exchange(pipe, cid, user_text, reply_text, settings):
    """Queue on `pipe` the user turn and the model turn, trimmed to HISTORY_MAX_TURNS exchanges."""
    key = keys(cid)["history"]
    pipe.rpush(key, _turn("user", user_text), _turn("model", reply_text))
    pipe.ltrim(key, -2 * settings.history_max_turns, -1)
    pipe.expire(key, settings.history_ttl_seconds)


def _turn(role, text):
    return json.dumps({"role": role, "text": text}, ensure_ascii=False)
