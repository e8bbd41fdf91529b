"""The Flask app Evolution posts to: check the token, parse, dedupe and buffer; answer fast.

It never calls Gemini or Evolution itself, except in degraded mode: when Redis is down and
REDIS_DOWN=direct, each message is answered at once from a small thread pool, without debounce
or history, until Redis is back. `gunicorn webhook:app` serves the module-level `app`.
"""

import gc
import hmac
import logging
import sys
import threading
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor

import redis as redis_lib
from flask import Flask, jsonify, request
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue

import attention
import buffer
import channels
import chats
import events
import instances
import learn
import panel
import parser
import replay
import sender
import shop_settings
import stats
from config import REQUIRED_FOR_REPLYING, SettingsError, load_settings, setup_logging

log = logging.getLogger(__name__)


def create_app(settings=None, redis=None, direct_context=None):
    """Build the app; tests pass their own settings, Redis and degraded-mode context."""
    if settings is None:
        settings = load_settings(require=("REDIS_URL",))
        replying = REQUIRED_FOR_REPLYING if settings.redis_down == "direct" else ()  # direct: it answers by itself
        settings = load_settings(require=("REDIS_URL", *replying, "WEBHOOK_TOKEN"))  # empty token: see config
        setup_logging(settings)
    if redis is None:
        redis = redis_lib.Redis.from_url(
            settings.redis_url, socket_connect_timeout=1, socket_timeout=2, retry=Retry(NoBackoff(), 1)
        )
    import worker  # the queue's name, and the answering code for degraded mode

    queue = Queue(worker.QUEUE_NAME, connection=redis)
    direct = None
    if settings.redis_down == "direct":
        direct = DirectReplies(settings, direct_context or (lambda: worker.make_context(settings, redis, queue)))

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    tally = stats.Tally()  # counts that wait for the next message's script: no round trip of their own
    live = shop_settings.Live(redis, settings)  # the owner's settings from the panel, over .env's
    app.register_blueprint(stats.metrics_blueprint(
        settings, redis, lambda: buffer.queue_depth(redis, worker.QUEUE_NAME), authorized))
    if settings.panel_password:
        app.register_blueprint(panel.make_blueprint(settings, redis, queue))
    if not settings.webhook_token:
        log.warning("WEBHOOK_TOKEN is not set: anyone who can reach this port can post messages to the bot")

    @app.post("/webhook")
    @app.post("/webhook/<event>")
    def receive(event=""):
        token, _, event_in_query = request.args.get("token", "").partition("/")
        event = event or event_in_query
        if not authorized(request, settings.webhook_token, token):
            warn_refused(request)
            return jsonify(error="missing or wrong token"), 401
        body = parser.parse_json(request.get_data())
        if body is parser.TOO_MANY_VALUES:
            return jsonify(error=f"body has more than {parser.MAX_JSON_VALUES} JSON values"), 413
        if body is None:
            return jsonify(error="body is not valid JSON"), 400
        recorded = connection_updates(body, event)
        messages = parser.parse_body(body, event)
        if not messages:
            log.debug("ignored event %r", _event_name(body, event))
            return jsonify(status="recorded" if recorded else "ignored")
        if len(messages) > settings.max_messages_per_body:  # Evolution posts one; a flood is refused whole
            log.warning("refused a body of %d messages (MAX_MESSAGES_PER_BODY=%d)", len(messages),
                        settings.max_messages_per_body)
            return jsonify(error=f"more than MAX_MESSAGES_PER_BODY={settings.max_messages_per_body} messages"), 413
        outcomes = []
        try:
            for message in messages:
                outcomes.append(handle(message))
        except redis_lib.RedisError as error:
            if isinstance(error, redis_lib.OutOfMemoryError):  # at maxmemory (noeviction): full, not down
                log.error("Redis is full (maxmemory): answering 503 so Evolution delivers again")
                return jsonify(error="Redis is full, retry later"), 503
            if direct is None or not never_reached(error):
                # The script may have run (a stall, a reset after sending): only a redelivery is safe, and
                # dedupe answers it once. Evolution retries a 503.
                log.error("Redis unavailable (%s): answering 503 so Evolution delivers again", error)
                return jsonify(error="Redis unavailable, retry later"), 503
            outcomes += [direct.submit(message) for message in messages[len(outcomes):]]
            if "busy" in outcomes:
                return jsonify(error="too many direct answers waiting, retry later"), 503
            if "unrecorded" in outcomes:
                return jsonify(error="Redis unavailable: a message sent from the shop's number waits for it"), 503
        else:
            if direct is not None:
                direct.recovered()
        tally.flush_if_due(redis)
        return jsonify(status="ok", results=outcomes)

    alert_session = sender.make_session()

    def connection_updates(body, event):
        """`connection.update`: each instance's state for /health; a closed one is logged loudly and alerted."""
        updates = parser.parse_connection_update(body, event)
        if updates:
            try:
                instances.handle_updates(redis, live.get(), updates, alert_session, time.time())
            except redis_lib.RedisError as error:
                log.warning("connection.update not recorded: Redis unavailable (%s)", error)
        return bool(updates)

    def confirm(message, notice):
        try:
            channels.send_text(alert_session, settings, message.channel, message.instance, message.reply_to, notice)
        except channels.Error as error:
            log.warning("owner command: the confirmation could not be sent: %s", error)

    own_numbers = set()  # every instance's own JID seen so far, to never answer another instance of this bot

    def handle(message):
        """Dedupe and buffer one message, or note a `fromMe` one; returns what happened (also logged)."""
        settings = live.get()  # DEBOUNCE_SECONDS and HANDOFF_PAUSE_MINUTES may come from the panel
        who = parser.mask(message.reply_to)
        if message.own_jid:
            own_numbers.add(message.own_jid)
        if message.from_me and message.chat_id == message.own_jid:  # the shop's own "message yourself" chat
            outcome, notice = chats.owner_command(redis, message, settings)
            log.info("owner command in the self-chat: %s", outcome)
            if notice:  # the one-line confirmation, in that same chat, without holding this answer
                threading.Thread(target=confirm, args=(message, notice), daemon=True).start()
            return outcome
        reason = parser.reason_to_ignore(message, settings, time.time())
        if not reason and message.chat_id in own_numbers:
            reason = "another number served by this bot (no bot-to-bot loops)"
        if reason:
            log.info("ignored %s from %s: %s", message.kind, who, reason)
            tally.add("ignored:" + reason.split(" (")[0])
            return "ignored"
        if message.from_me or message.event != "messages.upsert":
            return person_wrote(message)
        replay_refused()
        if replay.seen(redis, message):  # a signed Twilio or Cloud delivery replayed after the dedupe forgot it
            log.warning("%s from %s: message id seen in the last %d days; not answered again", message.kind, who,
                        replay.DAYS)
            tally.add("duplicates")
            return "duplicate"
        trigger = parser.has_word(message.text, settings.trigger_keywords) if settings.trigger_keywords else None
        outcome = buffer.add_message(redis, message, settings, trigger, counts=tally.take() + Counter(received=1))
        replay.remember(redis, message)
        if outcome in ("paused", "opted_out"):  # the customer wrote while a person holds the chat: the panel says so
            attention.flag(redis, buffer.chat_ref(message.instance, message.chat_id, message.channel), attention.WROTE)
        tally.add({"duplicate": "duplicates", "scheduled": "bursts"}.get(outcome, "outcome:" + outcome))
        if outcome != "duplicate":
            events.from_message(redis, settings, "message.received", message)
        log.info("%s from %s on %s: %s", message.kind, who, parser.mask(message.instance), outcome)
        return outcome

    refused = OrderedDict()  # fromMe messages Redis could not take: applied first once it can (see replay_refused)
    refused_lock = threading.Lock()

    def person_wrote(message):
        """A `fromMe` message: our echo, or a person in the chat. If Redis cannot take it, it is remembered in
        this process and applied as soon as Redis is back, before anything else (and answered 503 meanwhile)."""
        replay_refused()
        try:
            outcome = apply_from_me(message)
        except redis_lib.RedisError:
            with refused_lock:
                refused[(message.instance, message.message_id)] = message
                while len(refused) > 1000:
                    refused.popitem(last=False)
            replaying.set()
            raise
        log.info("fromMe in chat %s: %s", parser.mask(message.reply_to), outcome)
        return outcome

    def apply_from_me(message):
        outcome = chats.note_from_me(redis, message, settings)  # a person's message joins the chat's record
        if outcome == "paused":  # a person's answer (commands stop or resume)
            try:  # a person's answer after a handoff may teach the bot (learn.py)
                learn.person_answered(redis, queue, buffer.chat_ref(message.instance, message.chat_id, message.channel),
                                      message.text, settings)
            except redis_lib.OutOfMemoryError:  # applied past maxmemory (chats._run): nothing learned this time
                log.warning("Redis is full: a person's answer is not studied for the knowledge")
            events.from_message(redis, settings, "person.replied", message)
        return outcome

    def replay_refused():
        """Apply the remembered fromMe messages, oldest first; stops at the first one Redis still refuses."""
        while refused:
            with refused_lock:
                if not refused:
                    return
                key, message = next(iter(refused.items()))
            try:
                apply_from_me(message)
            except redis_lib.RedisError:
                return
            with refused_lock:
                refused.pop(key, None)
            log.warning("a fromMe message refused while Redis was unavailable is applied now")

    replaying = threading.Event()

    def keep_replaying():
        while True:
            replaying.wait()
            replay_refused()
            if not refused:
                replaying.clear()
            time.sleep(0.1)

    threading.Thread(target=keep_replaying, daemon=True, name="replay-refused").start()

    channels.register(app, settings, handle)  # /webhook/cloud and /webhook/twilio: 404 while their channel is off

    @app.get("/health")
    def health():
        """Anyone: {"status": "ok"|"degraded"}; with the webhook token or a panel session, the details too."""
        try:
            redis.ping()
            states = instances.all_states(redis)
        except redis_lib.RedisError:
            details, code = {"redis": "unreachable"}, 503
        else:
            details, code = {"redis": "ok", "instances": states}, 200
        ok = code == 200 and all(state.get("state") == "open" for state in details.get("instances", {}).values())
        status = {"status": "ok" if ok else "degraded"}
        if (settings.webhook_token and authorized(request, settings.webhook_token)) or (
                code == 200 and settings.panel_password and panel.logged_in()):
            status.update(details)
        return jsonify(status), code

    @app.errorhandler(413)
    def too_large(_error):
        return jsonify(error=f"body larger than MAX_BODY_BYTES={settings.max_body_bytes}"), 413

    return app


def never_reached(error):
    """Whether Redis provably did not run the command: the connection could not even be made.

    Only then may degraded mode answer directly; after a timeout the script may still complete.
    """
    return isinstance(error, (redis_lib.ConnectionError, redis_lib.TimeoutError)) and (
        "connecting to" in str(error) or "Timeout connecting" in str(error))


def authorized(req, token, given=None):
    """`?token=` (Evolution's global webhook sends no headers) or `Authorization: Bearer`, in constant time.

    With WEBHOOK_BY_EVENTS Evolution appends the event after the whole URL, so the query reads
    `token=SECRET/messages-upsert`: the caller passes the part before the slash as `given`.
    """
    if not token:
        return True
    given = req.args.get("token", "") if given is None else given
    header = req.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        given = given or header[7:].strip()
    return hmac.compare_digest(given.encode(), token.encode())


_refused = {"last": 0.0}
_refused_lock = threading.Lock()


def warn_refused(req):
    """Log a call refused for its token, at most once a minute per process (a wrong token floods otherwise)."""
    with _refused_lock:
        if time.monotonic() - _refused["last"] < 60 and _refused["last"]:
            return
        _refused["last"] = time.monotonic()
    log.warning("refused a webhook call from %s with a missing or wrong token: WEBHOOK_TOKEN must match the "
                "token in Evolution's webhook URL (shown at most once a minute)", req.remote_addr)


def _event_name(body, event):
    first = body[0] if isinstance(body, list) and body else body
    name = first.get("event") if isinstance(first, dict) else None
    return name if isinstance(name, str) else event


class DirectReplies:
    """Degraded mode: answer each message at once in a few threads, deduped in memory, while Redis is down.

    It keeps its own safeguards, in this process's memory: a bounded queue (past DIRECT_QUEUE_MAX the
    webhook answers 503 and Evolution delivers again later), RATE_LIMIT_PER_HOUR per chat, and the
    opt-out and handoff words (answered with their fixed text; the chat then stays quiet until Redis is back).
    """

    def __init__(self, settings, make_context):
        self.settings = settings
        self.make_context = make_context
        self.context = None
        self.pool = ThreadPoolExecutor(max_workers=settings.direct_reply_threads, thread_name_prefix="direct")
        self.seen = OrderedDict()
        self.lock = threading.Lock()
        self.degraded = False
        self.pending = 0
        self.hour, self.counts, self.held = None, Counter(), set()

    def submit(self, message):
        """Queue one message for a direct answer; returns what happened ("busy": answer 503, nothing was taken)."""
        settings = self.settings
        with self.lock:
            if not self.degraded:
                log.error("DEGRADED: Redis is down; answering each message directly (no debounce, no history)")
                self.degraded = True
            if self.context is None:
                self.context = self.make_context()
            key = (message.instance, message.message_id)
            if key in self.seen:
                return "duplicate"
            chat = (message.instance, message.chat_id)
            if message.from_me or message.event != "messages.upsert":
                # A person's message (the pause) or our echo (a part delivered) must reach Redis: refused
                # (503), so Evolution delivers it again; meanwhile that chat gets no direct answer.
                self.held.add(chat)
                return "unrecorded"
            if parser.reason_to_ignore(message, settings, time.time()):
                return "ignored"
            if chat not in self.held and self.pending >= settings.direct_queue_max:
                log.error("DEGRADED: %d direct answers waiting; refusing more (503) until they are sent", self.pending)
                return "busy"
            self.seen[key] = True
            while len(self.seen) > 10_000:
                self.seen.popitem(last=False)
            if chat in self.held:
                return "paused"
            hour = int(time.time() // 3600)
            if hour != self.hour:
                self.hour, self.counts = hour, Counter()
            self.counts[chat] += 1
            if settings.rate_limit_per_hour and self.counts[chat] > settings.rate_limit_per_hour:
                return "rate_limited"
            fixed = None
            if message.text.strip().lower() in settings.optout_keywords:
                fixed = settings.optout_message
            elif settings.handoff_phrases and parser.has_phrase(message.text, settings.handoff_phrases):
                fixed = settings.handoff_message
            if fixed:
                self.held.add(chat)
            self.pending += 1
        import worker

        self.pool.submit(self._answer, worker, message, fixed)
        return "answered directly"

    def _answer(self, worker, message, fixed):
        try:
            worker.answer_directly(self.context, message, fixed)
        except Exception:
            log.exception("degraded mode: could not answer %s", parser.mask(message.reply_to))
        finally:
            with self.lock:
                self.pending -= 1

    def recovered(self):
        if self.degraded:
            with self.lock:
                self.degraded = False
                self.held.clear()
            log.warning("Redis is back: debounce and history resumed")


def __getattr__(name):
    """`webhook.app` is built on first access (gunicorn), so importing this module needs no settings."""
    if name == "app":
        try:
            app = create_app()
        except SettingsError as error:
            print(f"erro de configuração: {error}", file=sys.stderr, flush=True)
            sys.exit(3)  # gunicorn's WORKER_BOOT_ERROR: the arbiter stops instead of restarting workers forever
        globals()["app"] = app
        gc.freeze()  # the modules' ~100,000 objects (google-genai, Flask) leave the collector's scans: measured in bench/
        return app
    raise AttributeError(name)
