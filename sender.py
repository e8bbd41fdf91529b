"""Evolution API v2 REST client: send text, show "typing…", mark as read, download media.

One `requests.Session` per process (`make_session`) is passed in. Errors carry Evolution's status
and body and say whether a retry can help; nothing here retries or sleeps.
"""

import base64
import json
import re
from urllib.parse import quote

import requests


_NUMBER = re.compile(r"\d{10,}")  # phone numbers (and LIDs) in Evolution's error bodies


class EvolutionError(Exception):
    """An Evolution call failed; `status` is None when it never answered (refused, timeout)."""

    def __init__(self, action, status, body, code=None):
        self.status = status
        self.body = body
        self.code = code  # Meta's error code, when a WHATSAPP-BUSINESS instance passed the Cloud API's error on
        shown = _NUMBER.sub("[number]", str(body))  # logged beside the chat id: never a hint of the number
        super().__init__(f"Evolution {action} failed: {status or 'no answer'} {shown}"[:500])

    @property
    def retryable(self):
        """Retry when Evolution did not answer, failed itself, or the phone's connection is down."""
        if self.code is not None:
            import cloud  # Meta's codes: rate limits and Meta's own trouble are worth a retry, the rest is not

            return self.code in cloud.RETRYABLE_CODES
        if self.status is None or self.status >= 500 or self.status in (408, 429):
            return True
        return "Connection Closed" in str(self.body)


def make_session():
    return requests.Session()


class TooLarge(Exception):
    """A download went past its byte limit; it was stopped there, whatever the sender declared."""


def _post(session, settings, action, instance, payload, max_bytes=None):
    """POST to `{EVOLUTION_API_URL}/{action}/{instance}` with the `apikey` header; JSON back or EvolutionError.

    With `max_bytes` the answer is streamed and the download stops (TooLarge) once it passes that size.
    """
    instance = instance or settings.evolution_instance
    url = f"{settings.evolution_api_url.rstrip('/')}/{action}/{quote(instance, safe='')}"
    try:
        response = session.post(
            url,
            json=payload,
            headers={"apikey": settings.evolution_api_key},
            timeout=settings.evolution_timeout_seconds,
            stream=max_bytes is not None,
        )
        with response:
            body = _read(response, max_bytes)
    except requests.RequestException as error:
        raise EvolutionError(action, None, type(error).__name__) from None
    if response.status_code >= 300:
        raise EvolutionError(action, response.status_code, body[:300].decode(errors="replace"))
    try:
        return json.loads(body)
    except ValueError:
        return {}


def _read(response, max_bytes):
    if max_bytes is None:
        return response.content
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > max_bytes:
            raise TooLarge(f"over {max_bytes} bytes")
    return bytes(body)


def send_text(session, settings, instance, number, text, delay_ms=0):
    """Send one WhatsApp text; returns Evolution's message (its `key.id` identifies our echo later).

    With `delay_ms`, Evolution shows "digitando…" for that long before the text arrives.
    """
    payload = {"number": number, "text": text, "linkPreview": settings.link_preview}
    if delay_ms:
        payload["delay"] = int(delay_ms)
    answer = _post(session, settings, "message/sendText", instance, payload)
    if isinstance(answer, dict) and "key" not in answer and ("error_data" in answer or "fbtrace_id" in answer):
        # A WHATSAPP-BUSINESS instance answers 201 with the Cloud API's error object when Meta refused the message.
        code = answer.get("code") if isinstance(answer.get("code"), int) else 0
        raise EvolutionError("message/sendText", 201, answer.get("message") or answer, code=code)
    return answer


def send_audio(session, settings, instance, number, audio):
    """Send `audio` (bytes Evolution's ffmpeg can read, e.g. WAV) as a voice note; returns Evolution's message."""
    payload = {"number": number, "audio": base64.b64encode(audio).decode()}
    return _post(session, settings, "message/sendWhatsAppAudio", instance, payload)


def send_presence(session, settings, instance, number, delay_ms):
    """Show "digitando…" for `delay_ms`; Evolution holds the request for that long."""
    payload = {"number": number, "presence": "composing", "delay": int(delay_ms)}
    return _post(session, settings, "chat/sendPresence", instance, payload)


def mark_read(session, settings, instance, messages):
    """Blue ticks for the customer's messages: `messages` are (remote_jid, message_id) pairs."""
    payload = {"readMessages": [{"remoteJid": jid, "fromMe": False, "id": mid} for jid, mid in messages]}
    return _post(session, settings, "chat/markMessageAsRead", instance, payload)


def get_media_base64(session, settings, instance, message_id, max_bytes):
    """Download one media message, base64-encoded, with its mimetype; stops past `max_bytes` of media.

    Evolution may answer JSON `null` (the message is gone): that is a failed download, an EvolutionError.
    """
    payload = {"message": {"key": {"id": message_id}}, "convertToMp4": False}
    limit = max_bytes * 4 // 3 + 64 * 1024  # base64 and the JSON around it
    answer = _post(session, settings, "chat/getBase64FromMediaMessage", instance, payload, max_bytes=limit)
    if not isinstance(answer, dict):
        raise EvolutionError("chat/getBase64FromMediaMessage", 201, "no media in the answer (null)")
    return answer


def fetch_instances(session, settings):
    """Evolution's instances (`GET /instance/fetchInstances`): rows with `name` and `connectionStatus`."""
    url = f"{settings.evolution_api_url.rstrip('/')}/instance/fetchInstances"
    try:
        response = session.get(url, headers={"apikey": settings.evolution_api_key},
                               timeout=settings.evolution_timeout_seconds)
    except requests.RequestException as error:
        raise EvolutionError("fetchInstances", None, type(error).__name__) from None
    if response.status_code >= 300:
        raise EvolutionError("fetchInstances", response.status_code, response.text[:300])
    try:
        rows = response.json()
    except json.JSONDecodeError:
        rows = []
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []
