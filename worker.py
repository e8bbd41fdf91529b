"""The job that answers a chat (merge the burst, ask Gemini, send one reply), and the worker that runs it.

`python worker.py` runs an RQ worker that answers up to WORKER_CONCURRENCY chats at once, in threads
(runner.py), and, beside it, a dispatcher that enqueues each chat's job when its time comes
(dispatch.py). Everything the job knows between tries lives in Redis (see buffer.py), so a worker
can die at any line and the next one carries on. No job ever sleeps: a retry, or the
typing time before a part of the reply, is a time in `wa:due` for another job.
"""

import argparse
import gc
import json
import logging
import random
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import redis as redis_lib
from rq import Queue

import ai_service
import alerts
import budget
import buffer
import channels
import chatlog
import chats
import dispatch
import doctor
import events
import followup
import hours
import instances
import memory
import runner
import sender
import shop_settings
import stats
import voice
from config import REQUIRED_FOR_REPLYING, load_settings, setup_logging
from parser import has_phrase, mask

log = logging.getLogger(__name__)

QUEUE_NAME = "whatsapp"
SUPPORTED_KINDS = {"text", "image", "video", "document", "audio"}
GEMINI_MEDIA = ("image/", "audio/", "video/", "application/pdf", "text/")


@dataclass(frozen=True)
class Context:
    """What a job needs, made once per process: settings, Redis, the RQ queue, Gemini and Evolution clients.

    Redis's connection pool and the Gemini client (httpx) are shared by the job threads; each thread has
    a requests Session of its own (get_context): requests does not promise a Session is thread-safe.
    """

    settings: object
    redis: object
    queue: object
    genai: object
    session: object


def make_context(settings, redis=None, queue=None):
    """Build every outside connection in one place; tests pass their own Redis."""
    redis = redis or redis_lib.Redis.from_url(settings.redis_url, health_check_interval=30)
    queue = queue or Queue(QUEUE_NAME, connection=redis)
    return Context(settings, redis, queue, ai_service.make_client(settings), sender.make_session())


_context = None
_thread = threading.local()


def get_context():
    """The calling thread's context: the process's (made from the environment on first use, e.g. under
    `rq worker`), with a requests Session of the thread's own."""
    global _context
    context = getattr(_thread, "context", None)
    if context is None:
        if _context is None:
            _context = make_context(load_settings(require=("REDIS_URL", *REQUIRED_FOR_REPLYING)))
        context = _thread.context = replace(_context, session=sender.make_session())
    return context


def answer_chat(cid, ticket=None):
    """RQ entry point (dispatch.py enqueues it): answer chat `cid` if its time has come."""
    process_chat(get_context(), cid, ticket)


def process_chat(ctx, cid, ticket=None):
    """Claim the chat, make (or reuse) its reply, deliver it (or its next part), and release the chat.

    `ticket` is the time the dispatcher gave the chat; without one the chat must already be due.
    """
    settings = ctx.settings
    state, token, stored, entries, tries = buffer.claim(ctx.redis, cid, settings.job_lease_seconds, ticket)
    if state == "idle" and settings.followup_after_minutes > 0:  # nothing to answer: maybe a follow-up is due
        state = followup.run(ctx, cid)
    if state != "ready":
        log.debug("chat %s: %s, nothing to do", cid, state)
        return
    reply = json.loads(stored) if stored else compose_reply(ctx, cid, token, entries, tries)
    if reply is not None:
        deliver(ctx, cid, token, reply)


PLACEHOLDERS = {"audio": "[áudio]", "image": "[imagem]", "video": "[vídeo]", "document": "[documento]",
                "sticker": "[figurinha]", "location": "[localização]", "contact": "[contato]", "poll": "[enquete]"}


def merge_burst(entries, settings):
    """The burst as one user turn: texts in the order they were written, cut to MAX_INPUT_CHARS.

    Media without a caption stands as a placeholder ("[áudio]"), so history keeps a turn for it.
    """
    lines = [entry.get("text") or PLACEHOLDERS.get(entry.get("kind"), "") for entry in entries]
    text = "\n".join(line for line in lines if line)
    if len(text) > settings.max_input_chars:
        log.info("burst of %d chars cut to MAX_INPUT_CHARS=%d", len(text), settings.max_input_chars)
        text = text[: settings.max_input_chars]
    return text


def compose_reply(ctx, cid, token, entries, tries):
    """Decide the answer for a burst: a fixed text (opt-out, handoff, fallback) or Gemini's. None when not now.

    `tries` counts every job that started composing this burst, including ones killed mid-way, so
    a burst that keeps killing its job ends in the fallback message instead of looping.
    """
    ctx = replace(ctx, settings=shop_settings.effective(ctx.redis, ctx.settings))  # the panel's, over .env's
    settings = ctx.settings
    entries = sorted(entries, key=lambda e: e.get("timestamp") or 0)  # delivery order is not guaranteed
    last = entries[-1]
    instance, number = last["instance"], last["reply_to"]
    user_text = merge_burst(entries, settings)
    last_words = (last.get("text") or "").strip().lower()

    reply = {"instance": instance, "reply_to": number, "user_text": user_text, "sent": 0, "created": time.time(),
             "rid": uuid.uuid4().hex[:12], "name": last.get("push_name") or "", "asked_at": last.get("timestamp") or None,
             "channel": last.get("channel", "evolution")}
    now = datetime.now(timezone.utc)
    if settings.bot_paused:  # the owner's switch: nobody is answered; the burst is kept for whoever answers
        buffer.finish(ctx.redis, cid, token, settings, user_turn=memory.turn("user", user_text))
        log.info("chat %s: the bot is paused in the panel (BOT_PAUSED), no reply", cid)
        return None
    if not hours.bot_active(settings, now):
        if hours.closed_notice_due(ctx.redis, cid, settings, now):
            return _stored(ctx, cid, token, {**reply, "parts": [settings.closed_message]})
        buffer.finish(ctx.redis, cid, token, settings, user_turn=memory.turn("user", user_text))
        log.info("chat %s: outside the bot's hours (BOT_ACTIVE=%s), no reply", cid, settings.bot_active)
        return None
    if last_words and last_words in settings.optout_keywords:
        log.info("chat %s opted out", cid)
        return _handoff(ctx, cid, token, reply, "o cliente pediu para o bot parar", settings.optout_message, "optout")
    if settings.handoff_phrases and has_phrase(user_text, settings.handoff_phrases):
        log.info("chat %s asked for a person: pausing the bot", cid)
        return _handoff(ctx, cid, token, reply, "o cliente pediu uma pessoa")

    supported = [e for e in entries if e.get("kind") in SUPPORTED_KINDS]
    if not supported:
        if settings.unknown_message:
            return _stored(ctx, cid, token, {**reply, "parts": [settings.unknown_message]})
        buffer.finish(ctx.redis, cid, token, settings, user_turn=memory.turn("user", user_text))
        log.info("chat %s: only unsupported messages, no reply", cid)
        return None
    if tries > settings.gemini_max_attempts:
        return _fallback(ctx, cid, token, reply, f"{tries - 1} tentativas interrompidas (o processo morreu ou estourou o tempo)")
    if not budget.allow(ctx.redis, settings):
        log.error("GEMINI_MAX_CALLS_PER_HOUR=%d reached: chat %s not sent to Gemini", settings.gemini_max_calls_per_hour, cid)
        if budget.first_notice(ctx.redis, cid):
            return _fallback(ctx, cid, token, reply, "limite de chamadas ao Gemini por hora atingido")
        buffer.finish(ctx.redis, cid, token, settings, user_turn=memory.turn("user", user_text))
        return None

    mark_as_read(ctx, instance, entries)
    show_typing(ctx, instance, number, reply["channel"])
    try:
        media, notes = collect_media(ctx, cid, token, instance, supported)
        if notes and not media and not any(e.get("text") for e in entries):  # nothing Gemini could look at
            return _stored(ctx, cid, token, {**reply, "parts": [settings.media_too_large_message]})
        if not buffer.renew(ctx.redis, cid, token, settings.job_lease_seconds):
            return _lost(cid)
        prompt_text = "\n".join(filter(None, [user_text, *notes]))
        usage, started = {}, time.monotonic()
        text = ai_service.generate_reply(
            ctx.genai, settings, memory.load_history(ctx.redis, cid), prompt_text,
            ai_service.load_system_prompt(settings, instance), media, usage=usage,
        )
        reply["usage"] = {**usage, "seconds": time.monotonic() - started}
        understood, text = ai_service.split_media_note(text) if media else ("", text)
        if understood:
            reply["user_text"] = f"{user_text}\n[{understood}]"
        if not text:
            raise ai_service.ReplyError("the answer held only the media note", retryable=False)
        parts = split_reply(text, settings, reply["channel"])
    except ai_service.Handoff as handoff:
        log.info("chat %s: Gemini handed the chat to a person (%s)", cid, handoff.reason)
        return _handoff(ctx, cid, token, reply, handoff.reason)
    except ai_service.ReplyError as error:
        stats.gemini_error(ctx.redis, error.reason)
        if error.retryable and tries < settings.gemini_max_attempts:
            delay = backoff(settings, tries)
            log.warning("chat %s: %s; try %d of %d again in %.0fs", cid, error.reason, tries,
                        settings.gemini_max_attempts, delay)
            buffer.retry_later(ctx.redis, cid, token, delay)
            return None
        log.error("chat %s: %s after %d tries; sending the fallback message", cid, error.reason, tries)
        if isinstance(error, MediaError):
            return _stored(ctx, cid, token, {**reply, "parts": [settings.media_failed_message]})
        return _fallback(ctx, cid, token, reply, error.reason)
    return _stored(ctx, cid, token, {**reply, "parts": parts, "kind": "gemini",
                                     "voice": voice.wanted(settings, reply["channel"], entries, text)})


def _handoff(ctx, cid, token, reply, reason, text=None, hold="handoff"):
    """The customer goes to a person (a phrase, Gemini's tool call, an opt-out): one message, the bot
    holds back, and the owner is told who, why and the customer's last words (OWNER_NUMBER)."""
    stored = _stored(ctx, cid, token, {**reply, "parts": [text or ctx.settings.handoff_message], "hold": hold})
    if stored is not None:
        alert = alerts.handoff_alert(reply["name"], reply["reply_to"], reason, reply["user_text"])
        alerts.notify_owner(ctx.session, ctx.settings, ctx.redis, reply["instance"], alert, channel=reply.get("channel"))
        events.record(ctx.redis, ctx.settings, "optout" if hold == "optout" else "handoff.requested", cid,
                      reply["instance"], reply["channel"], reply["reply_to"], reply["user_text"], reason=reason)
    return stored


def _fallback(ctx, cid, token, reply, reason):
    """FALLBACK_MESSAGE to the customer ("uma pessoa vai te responder"), and the owner told, once an hour per cause."""
    stored = _stored(ctx, cid, token, {**reply, "parts": [ctx.settings.fallback_message]})
    if stored is not None:
        cause = "fallback:" + re.sub(r"[^a-z0-9]+", "-", reason.lower())[:40]
        alerts.notify_owner(ctx.session, ctx.settings, ctx.redis, reply["instance"], alerts.fallback_alert(reason), cause,
                            channel=reply.get("channel"))
    return stored


def _stored(ctx, cid, token, reply):
    """Keep the reply before sending (a failed send never asks Gemini again); None when a person took over meanwhile."""
    if not buffer.store_reply(ctx.redis, cid, token, reply):
        return _lost(cid)
    return reply


def _lost(cid):
    log.info("chat %s: a person acted (or another job took over) while this job worked; it stops here", cid)
    return None


class MediaError(ai_service.ReplyError):
    """A customer's media could not be downloaded from Evolution."""


def collect_media(ctx, cid, token, instance, entries):
    """Media to show Gemini as (mimetype, bytes), plus notes for what was too large, too much or unsupported.

    A burst gets at most MAX_BURST_MEDIA files and MAX_BURST_MEDIA_MB in all; each download stops at
    MAX_MEDIA_MB whatever the sender declared, and is kept a few minutes so a retry does not fetch it again.
    """
    settings = ctx.settings
    limit = int(settings.max_media_mb * 1024 * 1024)
    budget = int(settings.max_burst_media_mb * 1024 * 1024)
    media, notes = [], []
    for entry in entries:
        info = entry.get("media") or {}
        if not info:
            continue
        mimetype = (info.get("mimetype") or "").split(";")[0].strip()
        if info.get("file_length", 0) > limit:
            notes.append(f"[O cliente enviou um arquivo de {info['file_length'] / 1048576:.1f} MB, grande demais para abrir.]")
            continue
        if info.get("seconds", 0) > settings.max_media_seconds:
            notes.append(f"[O cliente enviou um áudio/vídeo de {info['seconds']} s, longo demais para ouvir.]")
            continue
        if not mimetype.startswith(GEMINI_MEDIA):
            notes.append(f"[O cliente enviou um arquivo do tipo {mimetype or 'desconhecido'}, que não consigo abrir.]")
            continue
        if len(media) >= settings.max_burst_media or budget <= 0:
            notes.append("[O cliente enviou mais arquivos do que consigo abrir de uma vez.]")
            continue
        if not buffer.renew(ctx.redis, cid, token, settings.job_lease_seconds):
            raise MediaError("lease lost while downloading media", retryable=False)
        data = _media_bytes(ctx, cid, token, instance, entry, min(limit, budget))
        if data is None:
            notes.append("[O cliente enviou um arquivo grande demais para abrir.]")
            continue
        budget -= len(data)
        media.append((mimetype, data))
    return media, notes


def _media_bytes(ctx, cid, token, instance, entry, max_bytes):
    """The media's bytes (None past `max_bytes`): from the short-lived cache, else downloaded through the channel
    and cached while the job still holds the chat (an erasure during the download wins)."""
    cache = buffer.keys(cid)["media"]
    cached = ctx.redis.hget(cache, entry["message_id"])
    if cached is not None:  # sent inline by the webhook, or downloaded by an earlier try
        return cached if len(cached) <= max_bytes else None
    try:
        data = channels.get_media(ctx.session, ctx.settings, entry.get("channel"), instance, entry, max_bytes)
    except channels.TooLarge:
        return None
    except channels.Error as error:
        raise MediaError(f"media download failed: {error.status}", retryable=True) from None
    if not data:
        raise MediaError("the channel sent no valid media (Evolution: no valid base64)", retryable=True)
    if len(data) > max_bytes:
        return None
    try:
        held = buffer.cache_media(ctx.redis, cid, token, entry["message_id"], data)
    except redis_lib.ResponseError as error:  # e.g. Redis at its maxmemory: the cache is only a saving
        log.warning("media not cached: %s", error)
        held = buffer.renew(ctx.redis, cid, token, ctx.settings.job_lease_seconds)
    if not held:
        raise MediaError("lease lost while downloading media", retryable=False)
    return data



SPLIT_SETTINGS = {"cloud": "split_messages_cloud", "twilio": "split_messages_twilio"}


def split_reply(text, settings, channel="evolution"):
    """Long answers become several messages, split on blank lines (SPLIT_MESSAGES), like a person types.

    On the Cloud API and Twilio every message is billed, so there the answer stays one message unless
    SPLIT_MESSAGES_CLOUD / SPLIT_MESSAGES_TWILIO turn splitting on (docs/costs.md).
    At most MAX_REPLY_PARTS: the rest goes into the last part, so one answer never floods the chat.
    """
    if not getattr(settings, SPLIT_SETTINGS.get(channel, "split_messages")):
        return [text]
    parts = [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()] or [text]
    keep = settings.max_reply_parts
    return parts[: keep - 1] + ["\n\n".join(parts[keep - 1:])] if len(parts) > keep else parts


def backoff(settings, attempt):
    """Exponential backoff with jitter: about base, 2×base, 4×base… seconds."""
    return settings.retry_base_seconds * (2 ** (attempt - 1)) * random.uniform(0.75, 1.25)


def typing_ms(settings, text):
    return min(len(text) * settings.time_per_char_ms, settings.max_typing_ms)


def deliver(ctx, cid, token, reply):
    """Send the reply's next parts in order, then write history and release the chat.

    A part that takes typing time is announced ("digitando…") and left to a job that time later, so
    no worker waits through it; that job claims the chat first, so a person who acted meanwhile
    voided the reply and nothing more is sent. Each send is recorded as attempted before it is made
    and progress is stored after it: a part the customer may have (sent, attempted with no known
    outcome, or echoed) is never sent again nor made again.
    """
    settings = ctx.settings
    instance, number, parts = reply["instance"], reply["reply_to"], reply["parts"]
    channel = reply.get("channel", "evolution")  # replies stored before channels existed are Evolution's
    rid = reply.setdefault("rid", "0")  # replies stored before reply ids existed
    if reply.get("kind") == "gemini" and not _under_way(ctx, cid, reply) and \
            buffer.rejoin(ctx.redis, cid, token, settings):
        log.info("chat %s: the customer wrote while the reply was made; answering everything together", cid)
        return
    if reply.get("voice") and reply["sent"] == 0 and not voice.send(ctx, cid, token, reply):
        reply["voice"] = False  # VOICE_REPLIES: the text goes out instead, as it would have
    while reply["sent"] < len(parts):
        part = parts[reply["sent"]]
        if buffer.delivered_count(ctx.redis, cid, rid, part) > parts[: reply["sent"]].count(part):
            log.info("chat %s: part %d already delivered (its echo arrived); not sending again", cid, reply["sent"] + 1)
            reply["sent"] += 1
            continue
        if reply.get("attempt") == reply["sent"]:  # its job stopped mid-send (killed, Redis gone): outcome unknown
            log.warning("chat %s: part %d was being sent when its job stopped; counted as sent, never sent twice",
                        cid, reply["sent"] + 1)
            reply["sent"] += 1
            continue
        if time.time() - reply["created"] > settings.send_retry_minutes * 60:
            log.error("chat %s: not sent within SEND_RETRY_MINUTES; reply dropped", cid)
            break
        delay = typing_ms(settings, part) / 1000
        if delay and reply.get("typed") != reply["sent"]:
            reply["typed"] = reply["sent"]
            if not buffer.retry_later(ctx.redis, cid, token, delay, reply=reply):
                return _lost(cid)
            show_typing(ctx, instance, number, channel, delay)
            return
        if not buffer.attempt(ctx.redis, instance, cid, token, reply, part, settings.job_lease_seconds):
            return _lost(cid)
        try:
            message_id, _ = channels.send_text(ctx.session, settings, channel, instance, number, part)
        except channels.Error as error:
            if not channels.maybe_sent(error):
                del reply["attempt"]  # known not sent: a retry sends it
                age = time.time() - reply["created"]
                if error.retryable and age < settings.send_retry_minutes * 60:
                    delay = min(backoff(settings, buffer.count_attempt(ctx.redis, cid)), 120)
                    log.warning("chat %s: %s; sending again in %.0fs", cid, error, delay)
                    buffer.retry_later(ctx.redis, cid, token, delay, reply=reply)
                    return
                log.error("chat %s: %s; reply dropped", cid, error)
                break
            log.warning("chat %s: %s; it may have gone out: counted as sent, never sent twice", cid, error)
            message_id = None  # its text stays noted (note_sending), so a late echo is still known as ours
        else:
            buffer.note_sent(ctx.redis, instance, cid, rid, part, message_id)
        reply["sent"] += 1
        reply.setdefault("ids", []).append(message_id)
        logged_id = message_id or f"{rid}-{reply['sent']}"
        logged = chatlog.record_sent(ctx.redis, cid, logged_id, part, settings, buffer.keys(cid)["lock"], token)
        if not logged:  # a person took over during the send (history has the part): the panel's thread shows it
            chats.record_part_in_flight(ctx.redis, cid, logged_id, part, settings)
        if not logged or (reply["sent"] < len(parts) and not buffer.store_reply(ctx.redis, cid, token, reply)):
            return _lost(cid)  # stored: a crash now resends nothing already sent

    said = "\n\n".join(parts[: reply["sent"]])
    stats.write_reply(ctx.redis, reply, settings)  # the panel's counters, one pipeline per reply
    outcome = buffer.finish(
        ctx.redis, cid, token, settings, user_turn=memory.turn("user", reply["user_text"]),
        model_turn=memory.turn("model", said) if said else "", hold=reply.get("hold", ""),
    )
    if outcome == "lost":
        return _lost(cid)
    if said:
        events.record(ctx.redis, settings, "reply.sent", cid, instance, channel, number, said)
    followup.after_reply(ctx.redis, cid, reply, outcome, settings)
    if reply["sent"]:
        log.info("chat %s: replied in %d message(s)%s", cid, reply["sent"],
                 "" if outcome == "done" else f" ({outcome})")


def _under_way(ctx, cid, reply):
    """Whether the customer may have part of this reply already: one sent, one whose send was attempted, or echoed."""
    first = reply["parts"][0]
    return reply["sent"] > 0 or "attempt" in reply or buffer.delivered_count(ctx.redis, cid, reply["rid"], first) > 0


def mark_as_read(ctx, instance, entries):
    """Blue ticks on the burst (MARK_READ). Evolution drops '@lid' keys, so only phone JIDs are sent."""
    if not ctx.settings.mark_read:
        return
    keys = [(e["chat_id"], e["message_id"]) for e in entries if not e["chat_id"].endswith("@lid")]
    if not keys:
        return
    try:
        channels.mark_read(ctx.session, ctx.settings, entries[-1].get("channel"), instance, keys)
    except channels.Error as error:
        log.debug("mark as read failed: %s", error)


def show_typing(ctx, instance, number, channel="evolution", seconds=None):
    """"digitando…" for `seconds`, or while Gemini thinks (SEND_PRESENCE). Evolution holds the call that
    long, so it runs aside; a failure (or a channel without presence, like the Cloud API's) skips it."""
    if seconds is None and not ctx.settings.send_presence:
        return
    delay = ctx.settings.max_typing_ms if seconds is None else int(seconds * 1000)

    def run():
        try:
            channels.send_presence(ctx.session, ctx.settings, channel, instance, number, delay)
        except channels.Error as error:
            log.debug("presence failed: %s", error)

    threading.Thread(target=run, daemon=True).start()


def answer_directly(ctx, message, fixed=None):
    """Degraded mode (Redis down): answer one message at once, without debounce or history.

    `fixed` is a text to send instead of asking Gemini (the opt-out or handoff message).
    """
    settings = ctx.settings
    parts = [fixed] if fixed else None
    try:
        parts = parts or split_reply(ai_service.generate_reply(
            ctx.genai, settings, [], message.text[: settings.max_input_chars],
            ai_service.load_system_prompt(settings, message.instance),
        ), settings, message.channel)
    except ai_service.Handoff:
        parts = [settings.handoff_message]
    except ai_service.ReplyError as error:
        log.error("degraded mode: %s; sending the fallback message", error.reason)
        parts = [settings.fallback_message]
    for part in parts:
        channels.send_text(ctx.session, settings, message.channel, message.instance, message.reply_to, part)
    log.info("degraded mode: replied to %s in %d message(s)", mask(message.reply_to), len(parts))


def wait_for_redis(redis):
    """Start only once Redis answers: RQ gives up at a connection error while it starts (once running, it reconnects)."""
    while True:
        try:
            redis.ping()
            return
        except redis_lib.ConnectionError as error:
            log.error("Redis unreachable (%s); trying again in 2 s", error)
            time.sleep(2)


def run_worker(ctx):
    """Work the queue, WORKER_CONCURRENCY jobs at once, with this process's dispatcher beside it (dispatch.py).

    Jobs run in threads of the worker process (runner.py), not in a fork per job: forking cost about
    120 ms per job against 4 ms (bench/). A job that crashes the process is recovered like any dead
    worker: its chat comes due again when its lease ends and another worker's dispatcher enqueues it.
    Redis refusing writes (full at its maxmemory) stops no process: RQ's loop starts again and the
    dispatcher retries, until Redis takes writes again.
    """
    settings = ctx.settings
    wait_for_redis(ctx.redis)
    dispatcher = dispatch.Dispatcher(ctx.redis, ctx.queue, settings)
    dispatcher.start()
    pump = events.Pump(ctx.redis, ctx.queue) if settings.events_url else None  # outgoing events (events.py)
    if pump:
        pump.start()

    def make_worker():
        return runner.ThreadWorker([ctx.queue], connection=ctx.redis, worker_ttl=settings.sweep_seconds + 15,
                                   concurrency=settings.worker_concurrency)

    try:
        runner.run(make_worker, settings.log_level.upper())
    finally:
        dispatcher.stopped.set()
        if pump:
            pump.stopped.set()


def main(argv):
    """`python worker.py` runs the worker; `python worker.py forget INSTANCE NUMBER` erases one customer."""
    cli = argparse.ArgumentParser(description="WhatsApp bot worker")
    commands = cli.add_subparsers(dest="command")
    forget = commands.add_parser("forget", help="erase one customer's history and pending messages (LGPD)")
    forget.add_argument("instance", help="the Evolution instance, or '*' for every instance the bot knows")
    forget.add_argument("number", help="the number however written (+55 85 9 9999-9913), or a JID ('@lid' too)")
    commands.add_parser("check", help="check Redis, Gemini, Evolution, each number, the webhook and the prompt")
    args = cli.parse_args(argv)

    if args.command == "check":  # issue 13: the setup doctor; exit status 1 when something is wrong
        return doctor.run(load_settings(require=()))

    if args.command == "forget":
        settings = load_settings()
        redis = redis_lib.Redis.from_url(settings.redis_url)
        names = [args.instance]
        if args.instance == "*":  # every instance that reported its connection, and the default one
            names = sorted({*instances.all_states(redis), settings.evolution_instance} - {""})
        deleted = chats.forget_customer(redis, names, args.number)
        print(f"erased {deleted} key(s) for {mask(chats.customer_jids(args.number)[0])} on {', '.join(names)}")
        return 0
    settings = load_settings(require=("REDIS_URL", *REQUIRED_FOR_REPLYING))
    setup_logging(settings)
    threading.Thread(target=doctor.log_startup, args=(settings,), daemon=True).start()  # issue 13
    global _context
    _context = make_context(settings)
    gc.freeze()  # the SDKs' ~100,000 long-lived objects leave the collector's scans: less CPU per job (bench/)
    run_worker(_context)
    return 0


if __name__ == "__main__":
    import worker  # run as the importable module, so RQ's jobs find the context made in main()

    from config import SettingsError

    try:
        sys.exit(worker.main(sys.argv[1:]))
    except SettingsError as error:
        sys.exit(f"erro de configuração: {error}")
