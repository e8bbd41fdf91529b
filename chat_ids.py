"""A chat's id outside Redis (logs, panel URLs): an HMAC of its Redis ref under PANEL_SECRET_KEY.

`buffer.chat_ref` is a plain hash of instance and JID. Inside Redis that is fine (Redis holds the
number beside it anyway), but a plain hash printed in a log beside a masked number gives the number
back by trying the hidden digits. So every id that leaves Redis is keyed: the log filter below
rewrites any ref in a log line, and the panel's URLs carry the same keyed id. Redis keys and data
stay as they were, so nothing stored needs migrating.
"""

import hashlib
import hmac
import logging
import re
import secrets

REF = re.compile(r"(?<![0-9a-f])[0-9a-f]{20}(?![0-9a-f])")  # buffer.chat_ref's shape
PUBLIC = re.compile(r"[0-9a-f]{24}")  # longer than a ref: the filter never keys an id twice
_PROCESS_KEY = secrets.token_bytes(32)  # no PANEL_SECRET_KEY (no panel): ids agree within one process only


def key(settings):
    return settings.panel_secret_key.encode() or _PROCESS_KEY


def public(secret, cid):
    """The id the owner sees for the chat whose Redis ref is `cid`."""
    return hmac.new(secret, b"chat-id\n" + cid.encode(), hashlib.sha256).hexdigest()[:24]


class LogFilter(logging.Filter):
    """Rewrite each chat ref in a log line into its keyed id, whichever module logged it."""

    def __init__(self, secret):
        super().__init__()
        self.secret = secret

    def filter(self, record):
        message = record.getMessage()
        keyed = self.key(message)
        if keyed != message:
            record.msg, record.args = keyed, None
        if record.exc_info and not record.exc_text:  # a traceback may name a key such as wa:log:<ref>
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.key(record.exc_text)
        return True

    def key(self, text):
        return REF.sub(lambda match: public(self.secret, match.group()), text)


def install(settings):
    """Put the filter on every handler of the root logger (config.setup_logging calls it)."""
    log_filter = LogFilter(key(settings))
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, LogFilter) for f in handler.filters):
            handler.addFilter(log_filter)
