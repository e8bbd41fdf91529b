"""Meta's WhatsApp Cloud API, directly: its webhook into Messages, and the Graph API calls a reply needs.

Everything that knows the Cloud API's shapes lives here. A chat's instance is the business number's
`phone_number_id`; the customer is their `wa_id`. Nothing here retries or sleeps: errors say whether a
retry can help (`retryable`), by Meta's error codes.
"""

import hashlib
import hmac
import logging
import re
from urllib.parse import quote

import requests

import parser
from parser import Message, mask, to_int
from sender import META_RETRYABLE_CODES as RETRYABLE_CODES, TooLarge

log = logging.getLogger(__name__)

NAME = "cloud"
SETTINGS = ("WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN")

# Meta's codes that a later try can fix are RETRYABLE_CODES (sender.py: Evolution passes them on too); those it cannot:
WHY = {
    131047: "more than 24 hours since the customer's last message: only a template may be sent",
    131026: "the number cannot receive this message (not a WhatsApp user, or an old WhatsApp)",
    133010: "the business number is not registered on the Cloud API",
    131030: "the customer's number is not in the test number's allowed list",
    190: "WHATSAPP_TOKEN is invalid or expired: make a new one (a system user's permanent token)",
    10: "WHATSAPP_TOKEN lacks the whatsapp_business_messaging permission",
    200: "WHATSAPP_TOKEN lacks the whatsapp_business_messaging permission",
}

KINDS = {"text": "text", "image": "image", "audio": "audio", "voice": "audio", "video": "video",
         "document": "document", "sticker": "sticker", "location": "location", "contacts": "contact",
         "interactive": "text", "button": "text", "reaction": "reaction"}
MEDIA = ("image", "audio", "voice", "video", "document")


class CloudError(Exception):
    """A Graph API call failed; `status` is None when Meta never answered, `code` is Meta's error code."""

    def __init__(self, action, status, code=None, detail=""):
        self.status, self.code = status, code
        detail = re.sub(r"\d{10,}", "[number]", str(detail))  # logged beside the chat id: never the number
        why = WHY.get(code, "")
        super().__init__(f"Cloud API {action} failed: {status or 'no answer'} code {code} {detail}"
                         f"{' — ' + why if why else ''}"[:500])

    @property
    def retryable(self):
        if self.code in WHY:
            return False
        return self.status is None or self.status >= 500 or self.status == 429 or self.code in RETRYABLE_CODES


# --- The webhook ------------------------------------------------------------------------------------------

def signature_ok(app_secret, raw_body, header):
    """`X-Hub-Signature-256: sha256=<hex>`: the HMAC-SHA256 of the raw body with the app secret, compared in constant time."""
    if not app_secret or not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header[7:].strip().lower().encode())


def parse_body(body):
    """Messages in a Cloud API webhook body: customers' (`messages`) and the owner's typed in the WhatsApp
    Business app (`smb_message_echoes`, as fromMe). Statuses of our sends are logged, never messages."""
    messages = []
    entries = body.get("entry") if isinstance(body, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else []:
            if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
                continue
            value, field = change["value"], change.get("field")
            metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
            instance = str(metadata.get("phone_number_id") or "")
            if not instance:
                continue
            if field == "messages":
                names = {c.get("wa_id"): _get(c, "profile", "name") for c in _list(value, "contacts")}
                for item in _list(value, "messages"):
                    message = parse_message(item, instance, names.get(item.get("from")) or "", from_me=False)
                    if message is not None:
                        messages.append(message)
                for status in _list(value, "statuses"):
                    log_status(instance, status)
            elif field == "smb_message_echoes":
                for item in _list(value, "message_echoes"):
                    message = parse_message(item, instance, "", from_me=True)
                    if message is not None:
                        messages.append(message)
    return messages


def parse_message(item, instance, push_name, from_me):
    """One item of `messages` (or of `message_echoes`, whose customer is `to`) → Message, or None."""
    customer = item.get("to" if from_me else "from")
    message_id = item.get("id")
    if not isinstance(customer, str) or not customer.strip("+").isdigit() or not isinstance(message_id, str):
        return None
    if item.get("group_id"):  # Cloud API groups: never answered
        return None
    customer = customer.strip("+")
    kind_name = item.get("type") if isinstance(item.get("type"), str) else ""
    kind = KINDS.get(kind_name, "unknown")
    content = item.get(kind_name) if isinstance(item.get(kind_name), dict) else {}
    media = {}
    if kind_name in MEDIA and content.get("id"):
        media = {"mimetype": content.get("mime_type") or "", "file_length": 0, "seconds": 0,
                 "file_name": content.get("filename") or "", "id": str(content["id"])}
    return Message(
        event="messages.upsert", instance=instance, chat_id=f"{customer}@s.whatsapp.net", reply_to=customer,
        message_id=message_id, text=_text(kind_name, content), push_name=push_name if isinstance(push_name, str) else "",
        from_me=from_me, is_group=False, timestamp=to_int(item.get("timestamp")), kind=kind, media=media,
        channel=NAME,
    )


def _text(kind_name, content):
    """The words of a message: body, caption, or the title of the chosen button or list row."""
    if kind_name == "interactive":
        chosen = content.get(content.get("type")) if isinstance(content.get("type"), str) else None
        return (chosen.get("title") or "").strip() if isinstance(chosen, dict) else ""
    for name in ("body", "caption", "text"):
        if isinstance(content.get(name), str) and content[name].strip():
            return content[name].strip()
    return ""


def log_status(instance, status):
    """sent/delivered/read/failed of our own messages: a failed one is logged with Meta's error code."""
    if not isinstance(status, dict) or status.get("status") != "failed":
        return
    for error in status.get("errors") if isinstance(status.get("errors"), list) else [{}]:
        code = error.get("code") if isinstance(error, dict) else None
        log.error("Cloud API: our message to %s on %s failed: code %s %s%s", mask(str(status.get("recipient_id"))),
                  instance, code, (error.get("title") or "") if isinstance(error, dict) else "",
                  f" — {WHY[code]}" if code in WHY else "")


def _list(value, name):
    items = value.get(name)
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _get(value, *path):
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def register(app, settings, accept):
    """`GET /webhook/cloud` (Meta's subscription handshake) and `POST /webhook/cloud` (signed deliveries).

    `accept(messages)` buffers the messages and returns the Flask answer. A channel that is off answers 404.
    """
    from flask import abort, jsonify, request

    @app.get("/webhook/cloud")
    def cloud_handshake():
        if not settings.whatsapp_token:
            abort(404)
        token = request.args.get("hub.verify_token", "")
        if request.args.get("hub.mode") == "subscribe" and hmac.compare_digest(
                token.encode(), settings.whatsapp_verify_token.encode()):
            return request.args.get("hub.challenge", ""), 200, {"Content-Type": "text/plain"}
        log.warning("Cloud API handshake refused: hub.verify_token does not match WHATSAPP_VERIFY_TOKEN")
        return jsonify(error="verify token does not match"), 403

    @app.post("/webhook/cloud")
    def cloud_receive():
        if not settings.whatsapp_token:
            abort(404)
        raw = request.get_data()
        if not signature_ok(settings.whatsapp_app_secret, raw, request.headers.get("X-Hub-Signature-256", "")):
            log.warning("Cloud API delivery refused: X-Hub-Signature-256 missing or wrong (WHATSAPP_APP_SECRET?)")
            return jsonify(error="missing or wrong X-Hub-Signature-256"), 401
        body = parser.parse_json(raw)
        if body is None or body is parser.TOO_MANY_VALUES:
            return jsonify(error="body is not valid JSON or has too many values"), 400 if body is None else 413
        return accept(parse_body(body))


# --- The Graph API ---------------------------------------------------------------------------------------

def _url(settings, *path):
    return "/".join([settings.whatsapp_graph_url.rstrip("/"), settings.whatsapp_api_version.strip("/"),
                     *(quote(str(part), safe="") for part in path)])


def _headers(settings):
    return {"Authorization": f"Bearer {settings.whatsapp_token}"}


def _call(session, settings, action, method, url, payload=None):
    try:
        response = session.request(method, url, json=payload, headers=_headers(settings),
                                    timeout=settings.evolution_timeout_seconds)
    except requests.RequestException as error:
        raise CloudError(action, None, detail=type(error).__name__) from None
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.status_code >= 300:
        error = answer.get("error") if isinstance(answer, dict) and isinstance(answer.get("error"), dict) else {}
        raise CloudError(action, response.status_code, error.get("code"), str(error.get("message") or "")[:200])
    return answer if isinstance(answer, dict) else {}


def send_text(session, settings, instance, number, text):
    """Send one text to `number` (wa_id) from `instance` (phone_number_id); returns its wamid."""
    payload = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": number, "type": "text",
               "text": {"body": text, "preview_url": settings.link_preview}}
    answer = _call(session, settings, "send message", "POST", _url(settings, instance, "messages"), payload)
    messages = answer.get("messages")
    return messages[0].get("id") if isinstance(messages, list) and messages and isinstance(messages[0], dict) else None


def send_template(session, settings, instance, number, name, language):
    """Send the approved template `name` in `language` (e.g. pt_BR), without parameters; returns its wamid.
    The only message Meta delivers outside the 24-hour window (the follow-up after silence, followup.py)."""
    payload = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": number, "type": "template",
               "template": {"name": name, "language": {"code": language}}}
    answer = _call(session, settings, "send template", "POST", _url(settings, instance, "messages"), payload)
    messages = answer.get("messages")
    return messages[0].get("id") if isinstance(messages, list) and messages and isinstance(messages[0], dict) else None


def send_presence(session, settings, instance, number, delay_ms):
    """No separate presence on the Cloud API: "digitando…" goes with marking the burst read (mark_read)."""


def mark_read(session, settings, instance, messages):
    """Blue ticks up to the burst's last message (earlier ones are read with it), with "digitando…" shown
    until the reply or 25 s (SEND_PRESENCE): the Cloud API ties the typing indicator to a read receipt."""
    if not messages:
        return None
    payload = {"messaging_product": "whatsapp", "status": "read", "message_id": messages[-1][1]}
    if settings.send_presence:
        payload["typing_indicator"] = {"type": "text"}
    return _call(session, settings, "mark as read", "POST", _url(settings, instance, "messages"), payload)


def get_media(session, settings, instance, entry, max_bytes):
    """A customer's media as bytes: `GET /{version}/{media_id}` gives a short-lived URL, fetched with the same
    token and stopped past `max_bytes` (TooLarge)."""
    media_id = (entry.get("media") or {}).get("id")
    if not media_id:
        raise CloudError("media download", 404, detail="no media id in the message")
    info = _call(session, settings, "media url", "GET", _url(settings, media_id))
    if not info.get("url"):
        raise CloudError("media url", 200, detail="no url in the answer")
    if to_int(info.get("file_size")) > max_bytes:
        raise TooLarge(f"{info.get('file_size')} bytes")
    try:
        with session.get(info["url"], headers=_headers(settings), stream=True,
                         timeout=settings.evolution_timeout_seconds) as response:
            if response.status_code >= 300:
                raise CloudError("media download", response.status_code)
            data = bytearray()
            for chunk in response.iter_content(64 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise TooLarge(f"over {max_bytes} bytes")
    except requests.RequestException as error:
        raise CloudError("media download", None, detail=type(error).__name__) from None
    return bytes(data)
