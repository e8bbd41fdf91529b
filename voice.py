"""Voice replies (VOICE_REPLIES): the answer spoken with Gemini's text-to-speech and sent as a voice note.

The TTS model answers raw 16-bit mono PCM (`audio/L16;codec=pcm;rate=24000`); it is wrapped as WAV
with the standard library and handed to Evolution's sendWhatsAppAudio, which encodes it into the
OGG/Opus voice note WhatsApp plays. Only Evolution gets voice: the Cloud API takes voice notes only
as OGG/Opus files we cannot encode without a codec library, and Twilio's WhatsApp senders are text
here. Anything that fails (the hourly Gemini budget, TTS, the send) leaves the text to go out as
usual; history and the panel always keep the text.
"""

import io
import logging
import re
import wave

from google.genai import errors, types

import budget
import buffer
import channels
import chatlog
import chats

log = logging.getLogger(__name__)

MODES = ("off", "when_customer_sends_audio", "always")
CHANNELS = ("evolution",)
SAMPLE_RATE = 24000  # what the TTS models answer unless their mimeType says otherwise


class VoiceError(Exception):
    """No audio came back from the TTS model."""


def wanted(settings, channel, entries, text):
    """Whether this answer goes out spoken: the mode, the chat's channel, and at most VOICE_MAX_CHARS."""
    if settings.voice_replies == "off" or (channel or "evolution") not in CHANNELS:
        return False
    if len(text) > settings.voice_max_chars:
        return False
    return settings.voice_replies == "always" or any(entry.get("kind") == "audio" for entry in entries)


def synthesize(client, settings, text):
    """The text spoken by VOICE_NAME on VOICE_MODEL, as WAV bytes; VoiceError when no audio came back."""
    config = types.GenerateContentConfig(
        response_modalities=["AUDIO"],
        speech_config=types.SpeechConfig(voice_config=types.VoiceConfig(
            prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=settings.voice_name))),
    )
    try:
        response = client.models.generate_content(model=settings.voice_model, contents=text, config=config)
    except errors.APIError as error:
        raise VoiceError(f"TTS failed: {error.code} {error.status}") from None
    except Exception as error:  # a timeout or a refused connection: the text still goes out
        raise VoiceError(f"TTS failed: {type(error).__name__}") from None
    for candidate in response.candidates or []:
        for part in (candidate.content.parts if candidate.content else None) or []:
            blob = part.inline_data
            if blob and blob.data and (blob.mime_type or "").lower().startswith("audio/l16"):
                rate = re.search(r"rate=(\d+)", blob.mime_type)
                return to_wav(blob.data, int(rate.group(1)) if rate else SAMPLE_RATE)
    raise VoiceError("TTS answered no audio")


def to_wav(pcm, rate=SAMPLE_RATE):
    """Raw 16-bit little-endian mono PCM in a WAV container (what ffmpeg in Evolution reads)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()


def send(ctx, cid, token, reply):
    """Speak the whole reply and send it as one voice note. True when it went out, or may have (the reply is then
    all sent: never twice); False when the text should go out instead. History and the panel keep the text."""
    settings = ctx.settings
    text = "\n\n".join(reply["parts"])
    instance, number, rid = reply["instance"], reply["reply_to"], reply["rid"]
    if reply.get("attempt") == 0:  # a job stopped while sending the voice note: the customer may have it
        log.warning("chat %s: the voice note was being sent when its job stopped; counted as sent", cid)
        reply["sent"] = len(reply["parts"])
        return True
    if not budget.allow(ctx.redis, settings):
        log.warning("chat %s: GEMINI_MAX_CALLS_PER_HOUR reached; answering in text, not voice", cid)
        return False
    if not buffer.renew(ctx.redis, cid, token, settings.job_lease_seconds):
        return False
    try:
        audio = synthesize(ctx.genai, settings, text)
    except VoiceError as error:
        log.warning("chat %s: %s; answering in text", cid, error)
        return False
    if not buffer.attempt(ctx.redis, instance, cid, token, reply, "", settings.job_lease_seconds):
        return False  # the echo of a voice note has no text: "" is what it is noted under
    try:
        message_id = channels.send_audio(ctx.session, settings, reply.get("channel"), instance, number, audio)
    except channels.Error as error:
        if not channels.maybe_sent(error):
            log.warning("chat %s: voice note not sent (%s); answering in text", cid, error)
            del reply["attempt"]
            reply["voice"] = False
            buffer.note_sent(ctx.redis, instance, cid, rid, "", None)
            buffer.store_reply(ctx.redis, cid, token, reply)
            return False
        log.warning("chat %s: %s; the voice note may have gone out: counted as sent", cid, error)
        message_id = None
    else:
        buffer.note_sent(ctx.redis, instance, cid, rid, "", message_id)
    reply["sent"] = len(reply["parts"])
    reply["ids"] = [message_id]
    logged_id = message_id or f"{rid}-voice"
    if not chatlog.record_sent(ctx.redis, cid, logged_id, text, settings, buffer.keys(cid)["lock"], token):
        chats.record_part_in_flight(ctx.redis, cid, logged_id, text, settings)  # a person took over meanwhile
    log.info("chat %s: replied with a voice note (%d bytes of WAV)", cid, len(audio))
    return True
