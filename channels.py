"""The channels a chat can come in on, and the seam the rest of the bot talks through.

Each channel is one module with the same calls (`send_text`, `send_presence`, `mark_read`, `get_media`):
`sender` (Evolution API, the default), `cloud` (Meta's WhatsApp Cloud API) and `twilio_channel` (Twilio).
A message carries its channel's name into the burst and the stored reply; the worker and the panel send
through `channels.send_text(…, channel, …)` and never branch on it.
"""

import base64
import binascii
import logging

import cloud
import sender
import twilio_channel

log = logging.getLogger(__name__)

MODULES = {"evolution": sender, "cloud": cloud, "twilio": twilio_channel}
OFFICIAL = (cloud, twilio_channel)  # configured by their settings; a channel with none of them is off

Error = (sender.EvolutionError, cloud.CloudError, twilio_channel.TwilioError)  # each has `.status` and `.retryable`
TooLarge = sender.TooLarge


def send_text(session, settings, channel, instance, number, text):
    """Send one text through the chat's channel; returns (the id the channel gave our message, its WhatsApp
    timestamp), either None when the channel does not say."""
    if channel in (None, "", "evolution"):
        sent = sender.send_text(session, settings, instance, number, text)
        sent = sent if isinstance(sent, dict) else {}
        return (sent.get("key") or {}).get("id"), sent.get("messageTimestamp")
    return MODULES[channel].send_text(session, settings, instance, number, text), None


def send_audio(session, settings, channel, instance, number, audio):
    """Send a voice note (voice.py); Evolution only. Returns the id Evolution gave our message, or None."""
    if channel not in (None, "", "evolution"):
        raise ValueError(f"no voice notes on channel {channel}")
    sent = sender.send_audio(session, settings, instance, number, audio)
    return ((sent if isinstance(sent, dict) else {}).get("key") or {}).get("id")


def maybe_sent(error):
    """Whether a failed send may still have gone out: it was made and no answer came in time (a read timeout)."""
    return error.status is None and "ReadTimeout" in str(error)


def send_presence(session, settings, channel, instance, number, delay_ms):
    """"digitando…" for `delay_ms` where the channel has it (Evolution holds the call that long)."""
    return MODULES[channel or "evolution"].send_presence(session, settings, instance, number, delay_ms)


def mark_read(session, settings, channel, instance, messages):
    """Blue ticks for (chat_id, message_id) pairs, where the channel has them."""
    return MODULES[channel or "evolution"].mark_read(session, settings, instance, messages)


def get_media(session, settings, channel, instance, entry, max_bytes):
    """A burst entry's media as bytes (b"" when the channel sent nothing usable); TooLarge past `max_bytes`."""
    if channel in (None, "", "evolution"):
        answer = sender.get_media_base64(session, settings, instance, entry["message_id"], max_bytes)
        try:
            return base64.b64decode(answer.get("base64") or "", validate=True)
        except (binascii.Error, ValueError):
            return b""
    return MODULES[channel].get_media(session, settings, instance, entry, max_bytes)


def configured(settings):
    """The official channels whose settings are set (Evolution is always there)."""
    return [module for module in OFFICIAL if any(getattr(settings, name.lower()) for name in module.SETTINGS)]


def register(app, settings, handle):
    """Add each official channel's webhook routes; `handle(message)` dedupes and buffers one message.

    A channel that is off answers 404 on its routes. When Redis fails the delivery is answered 503, and
    Meta delivers again (Twilio does not: its message is lost, as the README says).
    """
    import redis as redis_lib
    from flask import jsonify, make_response

    def accept(messages):
        if len(messages) > settings.max_messages_per_body:
            return make_response(jsonify(error=f"more than MAX_MESSAGES_PER_BODY={settings.max_messages_per_body}"), 413)
        outcomes = []
        try:
            for message in messages:
                outcomes.append(handle(message))
        except redis_lib.RedisError as error:
            log.error("Redis unavailable (%s): answering 503 so the delivery is made again", error)
            return make_response(jsonify(error="Redis unavailable, retry later"), 503)
        return make_response(jsonify(status="ok" if messages else "ignored", results=outcomes))

    for module in OFFICIAL:
        module.register(app, settings, accept)
