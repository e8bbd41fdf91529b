"""Twilio's WhatsApp senders: its form-encoded webhook into Messages, and the REST calls a reply needs.

Everything that knows Twilio's shapes lives here. A chat's instance is the Twilio number the customer
wrote to (`+5511…`); the customer is their `WaId`. Twilio's own library validates the webhook's signature.
WhatsApp through Twilio has no typing indicator and no read receipts: those calls do nothing.
"""

import logging
import re
import time
from urllib.parse import urlsplit

import requests
from twilio.request_validator import RequestValidator

from parser import Message, mask
from sender import TooLarge

log = logging.getLogger(__name__)

NAME = "twilio"
SETTINGS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_WEBHOOK_URL")
STATUSES = {"accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered", "failed", "read",
            "canceled", "partially_delivered"}
WHY = {63016: "more than 24 hours since the customer's last message: only a template may be sent",
       20003: "TWILIO_ACCOUNT_SID or TWILIO_AUTH_TOKEN is wrong",
       63007: "the From number is not a WhatsApp sender of this account",
       21211: "the To number is not valid"}


class TwilioError(Exception):
    """A Twilio call failed; `status` is None when Twilio never answered, `code` is Twilio's error code."""

    def __init__(self, action, status, code=None, detail=""):
        self.status, self.code = status, code
        detail = re.sub(r"\d{10,}", "[number]", str(detail))  # logged beside the chat id: never the number
        why = WHY.get(code, "")
        super().__init__(f"Twilio {action} failed: {status or 'no answer'} code {code} {detail}"
                         f"{' — ' + why if why else ''}"[:500])

    @property
    def retryable(self):
        """Retry when Twilio did not answer, failed itself or rate-limited us; never a 4xx (e.g. 63016)."""
        return self.status is None or self.status >= 500 or self.status == 429


# --- The webhook ------------------------------------------------------------------------------------------

def _number(address):
    """`whatsapp:+5511999994321` → `+5511999994321`."""
    return address.split(":", 1)[1] if isinstance(address, str) and address.startswith("whatsapp:") else ""


def parse_form(form, now=None):
    """The message in one Twilio webhook form (a dict of strings), or None for a status callback or anything else.

    Twilio sends no time of writing: the time of arrival stands for it.
    """
    if form.get("MessageStatus") in STATUSES and "Body" not in form:
        log_status(form)
        return None
    instance, customer = _number(form.get("To")), _number(form.get("From"))
    sid = form.get("MessageSid") or form.get("SmsMessageSid") or ""
    wa_id = form.get("WaId") or customer.lstrip("+")
    if not instance or not wa_id.isdigit() or not sid:
        return None
    media, kind = {}, "text"
    if (form.get("NumMedia") or "0").strip() not in ("", "0") and form.get("MediaUrl0"):
        mimetype = form.get("MediaContentType0") or ""
        kind = next((k for k in ("image", "audio", "video") if mimetype.startswith(k + "/")), "document")
        if form.get("MessageType") == "sticker" or mimetype == "image/webp" and not form.get("Body"):
            kind = "sticker"
        media = {"mimetype": mimetype, "file_length": 0, "seconds": 0, "file_name": "", "url": form["MediaUrl0"]}
        if form.get("NumMedia") != "1":
            log.info("Twilio message with %s media: only the first is read", form.get("NumMedia"))
    elif form.get("Latitude") and form.get("Longitude"):
        kind = "location"
    text = (form.get("ButtonText") or form.get("Body") or "").strip()
    if kind == "text" and not text:
        kind = "unknown"
    return Message(
        event="messages.upsert", instance=instance, chat_id=f"{wa_id}@s.whatsapp.net", reply_to=wa_id,
        message_id=sid, text=text, push_name=form.get("ProfileName") or "", from_me=False, is_group=False,
        timestamp=int(time.time() if now is None else now), kind=kind, media=media, channel=NAME,
    )


def log_status(form):
    """A status callback of our own message: a failed or undelivered one is logged with Twilio's error code."""
    if form.get("MessageStatus") in ("failed", "undelivered"):
        code = int(form["ErrorCode"]) if (form.get("ErrorCode") or "").isdigit() else None
        log.error("Twilio: our message to %s %s: error %s%s", mask(_number(form.get("To"))), form["MessageStatus"],
                  code, f" — {WHY[code]}" if code in WHY else "")


def register(app, settings, accept):
    """`POST /webhook/twilio`: Twilio's signed form; answered with an empty TwiML `<Response/>`. Off: 404."""
    from flask import abort, request

    validator = RequestValidator(settings.twilio_auth_token) if settings.twilio_auth_token else None

    @app.post("/webhook/twilio")
    def twilio_receive():
        if validator is None:
            abort(404)
        form = request.form.to_dict()
        if not validator.validate(settings.twilio_webhook_url, form, request.headers.get("X-Twilio-Signature", "")):
            log.warning("Twilio delivery refused: X-Twilio-Signature does not match TWILIO_WEBHOOK_URL and "
                        "TWILIO_AUTH_TOKEN")
            return "<Response/>", 403, {"Content-Type": "text/xml"}
        message = parse_form(form)
        answer = accept([message] if message else [])
        if answer.status_code >= 300:
            return answer
        return '<?xml version="1.0" encoding="UTF-8"?><Response/>', 200, {"Content-Type": "text/xml"}


# --- The REST API ----------------------------------------------------------------------------------------

def _auth(settings):
    return (settings.twilio_account_sid, settings.twilio_auth_token)


def send_text(session, settings, instance, number, text):
    """Send one WhatsApp text from `instance` (+5511…) to `number` (digits); returns its SID."""
    url = f"{settings.twilio_api_url.rstrip('/')}/2010-04-01/Accounts/{settings.twilio_account_sid}/Messages.json"
    form = {"From": f"whatsapp:{instance}", "To": f"whatsapp:+{number.lstrip('+')}", "Body": text}
    try:
        response = session.post(url, data=form, auth=_auth(settings), timeout=settings.evolution_timeout_seconds)
    except requests.RequestException as error:
        raise TwilioError("send message", None, detail=type(error).__name__) from None
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    answer = answer if isinstance(answer, dict) else {}
    if response.status_code >= 300:
        raise TwilioError("send message", response.status_code, answer.get("code"), str(answer.get("message") or "")[:200])
    return answer.get("sid")


def send_presence(session, settings, instance, number, delay_ms):
    """Twilio shows no "digitando…" on WhatsApp: nothing to do."""


def mark_read(session, settings, instance, messages):
    """Twilio sends no read receipts on WhatsApp: nothing to do."""


def get_media(session, settings, instance, entry, max_bytes):
    """A customer's media from its `MediaUrl`, with the account's credentials (only ever sent to TWILIO_API_URL's
    host; Twilio redirects to its CDN without them), stopped past `max_bytes` (TooLarge)."""
    url = (entry.get("media") or {}).get("url") or ""
    if urlsplit(url).netloc != urlsplit(settings.twilio_api_url).netloc:
        raise TwilioError("media download", 400, detail="media URL is not on TWILIO_API_URL's host")
    try:
        with session.get(url, auth=_auth(settings), stream=True, timeout=settings.evolution_timeout_seconds) as response:
            if response.status_code >= 300:
                raise TwilioError("media download", response.status_code)
            data = bytearray()
            for chunk in response.iter_content(64 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise TooLarge(f"over {max_bytes} bytes")
    except requests.RequestException as error:
        raise TwilioError("media download", None, detail=type(error).__name__) from None
    return bytes(data)
