"""Turn whatever Evolution POSTs into a list of incoming messages. Pure functions, no I/O.

Evolution's payloads differ by version (v1 and v2, '@lid' addressing moved between fields in
every 2.3.x release), so everything that knows those shapes lives here and nowhere else.
"""

import json
import re
import unicodedata
from dataclasses import dataclass, field

MESSAGE_EVENTS = {"messages.upsert", "send.message"}

# Wrappers whose inner `message` holds the real content.
WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
    "editedMessage",
)

# Message type → kind the bot reasons about. The first key found in `message` wins.
KINDS = {
    "conversation": "text",
    "extendedTextMessage": "text",
    "buttonsResponseMessage": "text",
    "listResponseMessage": "text",
    "templateButtonReplyMessage": "text",
    "interactiveResponseMessage": "text",
    "imageMessage": "image",
    "videoMessage": "video",
    "documentMessage": "document",
    "audioMessage": "audio",
    "stickerMessage": "sticker",
    "locationMessage": "location",
    "liveLocationMessage": "location",
    "contactMessage": "contact",
    "contactsArrayMessage": "contact",
    "pollCreationMessage": "poll",
    "pollCreationMessageV2": "poll",
    "pollCreationMessageV3": "poll",
    "reactionMessage": "reaction",
    # Not something a customer wrote: poll votes, deletions, key exchanges, encrypted edits (2026+).
    "pollUpdateMessage": "protocol",
    "protocolMessage": "protocol",
    "senderKeyDistributionMessage": "protocol",
    "secretEncryptedMessage": "protocol",
}

MEDIA_KINDS = {"image", "video", "document", "audio"}


@dataclass(frozen=True)
class Message:
    """One WhatsApp message as the bot needs it, whatever Evolution version sent it."""

    event: str
    instance: str
    chat_id: str  # the chat's key: the phone JID when known, else the '@lid' JID, or the group JID
    reply_to: str  # what sendText's `number` gets: phone digits, or the JID as given
    message_id: str
    text: str
    push_name: str
    from_me: bool
    is_group: bool
    timestamp: int
    kind: str
    lid: str = ""  # the '@lid' JID when the payload carried one
    own_jid: str = ""  # the instance's own number (the body's `sender`)
    media: dict = field(default_factory=dict)  # mimetype, seconds, fileLength, fileName, base64 (when sent inline)
    channel: str = "evolution"  # which channel module (channels.py) it came through and the reply goes out by


def parse_body(body, event_from_path=""):
    """Every message in a webhook body: a dict or a list of events, `data` a dict or a list.

    `event_from_path` is the suffix of "webhook by events" URLs (`messages-upsert`). Anything that is
    not a message event gives an empty list; no input raises.
    """
    events = body if isinstance(body, list) else [body]
    messages = []
    for event in events:
        if not isinstance(event, dict):
            continue
        name = normalize_event(event.get("event") or event_from_path)
        if name not in MESSAGE_EVENTS:
            continue
        instance = event.get("instance")
        if isinstance(instance, dict):  # some v1 builds sent {instanceName, ...}
            instance = instance.get("instanceName")
        instance = instance if isinstance(instance, str) else ""
        data = event.get("data")
        own_jid = _jid(event.get("sender"))
        for item in data if isinstance(data, list) else [data]:
            message = parse_message(item, name, instance, own_jid)
            if message is not None:
                messages.append(message)
    return messages


def parse_connection_update(body, event_from_path=""):
    """Every `connection.update` in a webhook body as (instance, state, status_reason); [] for anything else.

    Evolution 2.3.7 posts `data: {instance, state: "open"|"close"|"connecting"|"refused", statusReason, ...}`;
    a close is posted only when Baileys will not reconnect by itself (401 logged out, 403 banned, 402, 406).
    """
    updates = []
    for event in body if isinstance(body, list) else [body]:
        if not isinstance(event, dict) or normalize_event(event.get("event") or event_from_path) != "connection.update":
            continue
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        instance = data.get("instance") or event.get("instance")
        if isinstance(instance, dict):  # some v1 builds sent {instanceName, ...}
            instance = instance.get("instanceName")
        state = data.get("state")
        if isinstance(instance, str) and instance.strip() and isinstance(state, str) and state.strip():
            updates.append((instance.strip(), state.strip().lower(), to_int(data.get("statusReason"))))
    return updates


def normalize_event(name):
    """`MESSAGES_UPSERT`, `messages-upsert` and `messages.upsert` are one event."""
    if not isinstance(name, str):
        return ""
    return name.strip().lower().replace("_", ".").replace("-", ".")


def parse_message(data, event, instance, own_jid=""):
    """One `data` item → Message, or None when it has no key or chat."""
    if not isinstance(data, dict):
        return None
    key = data.get("key")
    if not isinstance(key, dict):
        return None
    remote = _jid(key.get("remoteJid"))
    message_id = key.get("id")
    if not remote or not isinstance(message_id, str) or not message_id:
        return None

    is_group = remote.endswith("@g.us")
    if is_group:
        chat_id = reply_to = remote
        lid = _first(key, ("participant", "participantAlt"), "@lid")
    else:
        candidates = ("remoteJid", "remoteJidAlt", "senderPn", "previousRemoteJid")
        phone = _first(key, candidates, "@s.whatsapp.net")
        lid = _first(key, candidates, "@lid")
        chat_id = phone or lid or remote
        reply_to = phone.split("@")[0] if phone else chat_id

    content, kind = unwrap(data.get("message"))
    push_name = data.get("pushName")
    return Message(
        event=event,
        instance=instance,
        chat_id=chat_id,
        reply_to=reply_to,
        message_id=message_id,
        text=extract_text(content),
        push_name=push_name if isinstance(push_name, str) else "",
        from_me=key.get("fromMe") is True,
        is_group=is_group,
        timestamp=to_int(data.get("messageTimestamp")),
        kind=kind,
        lid=lid,
        own_jid=own_jid,
        media=_media_info(content, kind),
    )


def _jid(value):
    """A JID without spaces or device suffix: `5511…:12@s.whatsapp.net` → `5511…@s.whatsapp.net`."""
    if not isinstance(value, str):
        return ""
    user, at, server = value.strip().partition("@")
    return user.split(":")[0] + at + server


def _first(key, names, suffix):
    """The first of `names` in `key` whose JID ends with `suffix` ('@s.whatsapp.net' or '@lid')."""
    for name in names:
        value = _jid(key.get(name))
        if value.endswith(suffix):
            return value
    return ""


def unwrap(message):
    """Peel ephemeral/view-once/caption/edit wrappers; return (inner message dict, kind)."""
    for _ in range(5):
        if not isinstance(message, dict):
            return {}, "unknown"
        inner = next((message[w] for w in WRAPPERS if isinstance(message.get(w), dict)), None)
        if inner is None:
            break
        message = inner.get("message", inner)
    if not isinstance(message, dict):
        return {}, "unknown"
    protocol = message.get("protocolMessage")
    if isinstance(protocol, dict) and isinstance(protocol.get("editedMessage"), dict):
        return unwrap(protocol["editedMessage"])  # an edit carries the new content inside
    for name, kind in KINDS.items():
        if name in message:
            return message, kind
    return message, "unknown"


def extract_text(message):
    """The words of a message: body, caption, or the label of a chosen button or list row."""
    candidates = (
        message.get("conversation"),
        _get(message, "extendedTextMessage", "text"),
        _get(message, "imageMessage", "caption"),
        _get(message, "videoMessage", "caption"),
        _get(message, "documentMessage", "caption"),
        _get(message, "buttonsResponseMessage", "selectedDisplayText"),
        _get(message, "listResponseMessage", "title"),
        _get(message, "listResponseMessage", "singleSelectReply", "selectedRowId"),
        _get(message, "templateButtonReplyMessage", "selectedDisplayText"),
        _get(message, "interactiveResponseMessage", "body", "text"),
    )
    return next((text.strip() for text in candidates if isinstance(text, str) and text.strip()), "")


def _get(value, *path):
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _media_info(message, kind):
    """What the worker needs to fetch and describe a media message; never the bytes except inline base64."""
    if kind not in MEDIA_KINDS:
        return {}
    body = message.get(f"{kind}Message")
    body = body if isinstance(body, dict) else {}
    mimetype = body.get("mimetype") or body.get("mime_type")  # mime_type: a WHATSAPP-BUSINESS instance's Cloud API media
    file_name = body.get("fileName") or body.get("filename")
    info = {
        "mimetype": mimetype if isinstance(mimetype, str) else "",
        "file_length": to_int(body.get("fileLength")),
        "seconds": to_int(body.get("seconds")),
        "file_name": file_name if isinstance(file_name, str) else "",
    }
    if isinstance(message.get("base64"), str):
        info["base64"] = message["base64"]
    return info


def to_int(value):
    """Evolution sends numbers as int, str, or protobuf Long `{low, high, unsigned}`."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 2**63:
        return int(value)
    if isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) <= 20:
        return int(value.strip())  # isdigit() would let '²' through, and int() refuses over 4300 digits
    if isinstance(value, dict):
        low, high = value.get("low"), value.get("high")
        if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
            return (high << 32) + (low & 0xFFFFFFFF)
    return 0


def reason_to_ignore(message, settings, now):
    """Why the bot must not act on this message, or "" when it should. Pure, so each rule is testable.

    `fromMe` messages and `send.message` echoes are not ignored here: the webhook uses them to see
    when a person answers from the phone (human handoff).
    """
    chat = message.chat_id
    if chat == "status@broadcast" or chat.endswith("@broadcast"):
        return "status broadcast"
    if chat.endswith("@newsletter"):
        return "newsletter"
    if message.is_group and not settings.reply_to_groups:
        return "group chat"
    if message.kind in ("reaction", "protocol", "unknown"):
        return f"{message.kind} message"
    if message.timestamp and now - message.timestamp > settings.max_message_age_seconds:
        return f"older than {settings.max_message_age_seconds}s (backlog replay)"
    number = message.reply_to.split("@")[0]
    if _listed(number, settings.ignore_numbers):
        return "number in IGNORE_NUMBERS"
    if settings.only_numbers and not _listed(number, settings.only_numbers):
        return "number not in ONLY_NUMBERS"
    return ""


def _listed(number, numbers):
    """Whether a JID's digits are among `numbers` as people write them ('+55 85 99999-9914'), including
    Brazilian mobiles whose 9th digit WhatsApp drops (Evolution's createJid: DDD >= 31, first digit >= 7)."""
    for written in numbers:
        digits = "".join(ch for ch in written if ch in "0123456789") or written
        if len(digits) == 13 and digits.startswith("55") and int(digits[2:4]) >= 31 and digits[5] >= "7":
            digits = digits[:4] + digits[5:]
        if number == digits:
            return True
    return False


def has_word(text, words):
    """Whether any of `words` stands in `text` as a whole word (case-insensitive): "atendente" in "quero um atendente"."""
    lowered = text.lower()
    return any(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", lowered) for word in words)


def fold(text):
    """Lower case, accents off, spaces collapsed: "Falar com  ALGUÉM" → "falar com alguem"."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return " ".join("".join(ch for ch in decomposed if not unicodedata.combining(ch)).split())


def has_phrase(text, phrases):
    """Whether any of `phrases` stands in `text` as whole words, ignoring case and accents.

    "quero falar com um atendente" asks for a person; "o rodízio é por pessoa?" does not.
    """
    folded = fold(text)
    return any(re.search(rf"(?<!\w){re.escape(fold(phrase))}(?!\w)", folded) for phrase in phrases if phrase.strip())


def mask(jid):
    """Hide the middle of a phone number or JID for logs: 5511999994321 → 5511*****4321.

    Anything that is not a number (an instance called "loja") is returned as it is.
    """
    number, _, domain = str(jid).partition("@")
    if number.startswith("+") and number[1:].isdigit():  # a Twilio number, +5511…
        return "+" + mask(number[1:] + ("@" + domain if domain else ""))
    if not number.isdigit():
        return str(jid)
    if len(number) <= 8:
        hidden = number[:2] + "*" * max(len(number) - 2, 0)
    else:
        hidden = number[:4] + "*" * (len(number) - 8) + number[-4:]
    return f"{hidden}@{domain}" if domain else hidden


MAX_JSON_VALUES = 100_000  # a real delivery has a few hundred; inline media is one long string
TOO_MANY_VALUES = object()


def parse_json(raw):
    """The body parsed, None when it is not JSON, or TOO_MANY_VALUES without parsing it.

    Parsing costs memory per value (~100 bytes each), not per byte: 16 MiB of `[{},{},…]` grew a worker
    by ~440 MB. Every value but the first follows a `,`, `[` or `{`, so counting those bytes (at C speed)
    bounds what parsing can make, while one 16 MiB string of base64 media still passes.
    """
    if raw.count(b",") + raw.count(b"[") + raw.count(b"{") > MAX_JSON_VALUES:
        return TOO_MANY_VALUES
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the interpreter's limit
        return None
