"""Test doubles for the outside world, at the network edge: Evolution API v2 and the Gemini API.

Both are real HTTP servers on 127.0.0.1 (free port, background thread), so the bot's own HTTP
clients (requests, google-genai) are exercised end to end. Status codes, paths and bodies follow
Evolution's source (src/main.ts, src/api/guards, src/validate, whatsapp.baileys.service.ts) and
the google-genai SDK / Gemini API error bodies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import collections
import json
import mimetypes
import re
import secrets
import socket
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeEvolution", "FakeGemini", "FakeGraph", "FakeReceiver", "FakeTwilio", "create_jid", "tts_voice_name"]


# --------------------------------------------------------------------------------------------
# Shared HTTP plumbing
# --------------------------------------------------------------------------------------------

JSON_NULL = object()  # a body of JSON `null`


class _Handler(BaseHTTPRequestHandler):
    """Forwards every request to the owning fake; HTTP/1.0, so each connection carries one request."""

    def _dispatch(self):
        self.server.fake._dispatch(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def log_message(self, *args):  # keep test output clean
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that timed out and hung up is normal here (delays, holds); anything else is a bug.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _FakeHTTPServer:
    """Base of both fakes: lifecycle, down/up switch, request recording and a scripted fault queue."""

    def __init__(self, port: int = 0):
        self._lock = threading.RLock()
        self._port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()  # set by stop(): ends delays and holds at once
        self._faults: dict[str | None, collections.deque] = collections.defaultdict(collections.deque)
        self.requests: list[dict] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self):
        """Start listening (on the same port as before if it was started already)."""
        self._closing.clear()
        self._listen()
        return self

    def stop(self):
        """Stop listening and end any delayed or held request."""
        self._closing.set()
        self._unlisten()

    def down(self):
        """Refuse connections (nothing listens on the port) until up(); in-flight requests finish."""
        self._unlisten()

    def up(self):
        """Listen again on the same port after down()."""
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _listen(self):
        with self._lock:
            if self._httpd is not None:
                return
            httpd = _Server(("127.0.0.1", self._port), _Handler)
            httpd.fake = self
            self._port = httpd.server_address[1]
            self._httpd = httpd
            self._thread = threading.Thread(
                target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                name=f"{type(self).__name__}:{self._port}")
            self._thread.start()

    def _unlisten(self):
        with self._lock:
            httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    # -- faults and waiting ------------------------------------------------------------------
    def _push_fault(self, route, fault: dict, times: int):
        with self._lock:
            self._faults[route].extend(dict(fault) for _ in range(times))

    def _pop_fault(self, route):
        with self._lock:
            queue = self._faults.get(route)
            return queue.popleft() if queue else None

    def _sleep(self, seconds: float):
        """Sleep, but wake up at once when the fake is stopped."""
        if seconds > 0:
            self._closing.wait(seconds)

    def _wait_until(self, predicate, timeout: float, describe):
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                raise AssertionError(f"{type(self).__name__}: timed out after {timeout}s; {describe()}")
            time.sleep(0.01)

    # -- request handling --------------------------------------------------------------------
    def _dispatch(self, h: BaseHTTPRequestHandler):
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        record = {
            "method": h.command,
            "path": h.path,
            "headers": {k.lower(): v for k, v in h.headers.items()},
            "raw": raw,
            "status": None,  # filled in when answered; stays None for a dropped connection
            "time": time.time(),
        }
        answer = self._handle(record)  # (status, body) or None to drop the connection
        if answer is None:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        status, body, *extra = answer  # a third item: more headers (Location, Content-Type of bytes)
        headers = dict(extra[0]) if extra else {}
        record["status"] = status
        if isinstance(body, bytes):
            data, ctype = body, headers.pop("Content-Type", "application/octet-stream")
        elif body is None or body is JSON_NULL or isinstance(body, (dict, list)):  # None: Express's res.json(null)
            data = json.dumps(None if body is JSON_NULL else body).encode()
            ctype = "application/json; charset=utf-8"
        else:
            data, ctype = str(body).encode(), "text/html; charset=utf-8"
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            h.send_header(name, value)
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(data)

    def _record(self, record: dict):
        with self._lock:
            self.requests.append(record)

    def _handle(self, record: dict):
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Evolution API v2
# --------------------------------------------------------------------------------------------

def create_jid(number: str) -> str:
    """Port of Evolution's createJid (src/utils/createJid.ts), including the BR 9th-digit and MX/AR rules."""
    number = re.sub(r":\d+", "", number, count=1)
    if any(s in number for s in ("@g.us", "@s.whatsapp.net", "@lid", "@broadcast")):
        return number
    number = re.sub(r"\s", "", number).replace("+", "").replace("(", "").replace(")", "")
    number = number.split(":")[0].split("@")[0]
    if "-" in number and len(number) >= 24:
        return re.sub(r"[^\d-]", "", number) + "@g.us"
    number = re.sub(r"\D", "", number)
    if len(number) >= 18:
        return number + "@g.us"
    if number[:2] in ("52", "54") and len(number) == 13:  # formatMXOrARNumber
        number = number[:2] + number[3:]
    m = re.fullmatch(r"(\d{2})(\d{2})\d(\d{8})", number)  # formatBRNumber
    if m and m.group(1) == "55" and not (int(m.group(3)[0]) < 7 or int(m.group(2)) < 31):
        number = m.group(1) + m.group(2) + m.group(3)
    return number + "@s.whatsapp.net"


# JSON-schema subsets of src/validate/message.schema.ts and chat.schema.ts (only what a bot sends).
_NUMBER = {"type": "string", "description": "Invalid format"}
_SCHEMAS = {
    "sendText": {
        "type": "object",
        "properties": {
            "number": _NUMBER,
            "text": {"type": "string"},
            "linkPreview": {"type": "boolean"},
            "delay": {"type": "integer", "description": "Enter a value in milliseconds"},
            "everyOne": {"type": "boolean", "enum": [True, False]},
            "mentioned": {"type": "array", "minItems": 1},
        },
        "required": ["number", "text"],
    },
    "sendPresence": {
        "type": "object",
        "properties": {
            "number": _NUMBER,
            "delay": {"type": "number"},
            "presence": {"type": "string",
                         "enum": ["unavailable", "available", "composing", "recording", "paused"]},
        },
        "required": ["number", "presence", "delay"],
    },
    "markMessageAsRead": {
        "type": "object",
        "properties": {
            "readMessages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "properties": {
                        "id": {"type": "string"},
                        "fromMe": {"type": "boolean", "enum": [True, False]},
                        "remoteJid": {"type": "string"},
                    },
                    "required": ["id", "fromMe", "remoteJid"],
                },
            },
        },
        "required": ["readMessages"],
    },
    "getBase64FromMediaMessage": None,  # Evolution validates nothing here
    "sendWhatsAppAudio": {  # audioMessageSchema
        "type": "object",
        "properties": {
            "number": _NUMBER,
            "audio": {"type": "string"},
            "delay": {"type": "integer", "description": "Enter a value in milliseconds"},
            "encoding": {"type": "boolean", "enum": [True, False]},
        },
        "required": ["number", "audio"],
    },
    # instance.schema.ts (the fields a panel sends): `Integration` is spelled so in the schema, so the
    # `integration` the controller reads is not checked against the enum there.
    "createInstance": {
        "type": "object",
        "properties": {
            "instanceName": {"type": "string"},
            "token": {"type": "string"},
            "qrcode": {"type": "boolean"},
        },
    },
}

_JSON_TYPES = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _schema_errors(value, schema: dict, path: str = "instance") -> list[str]:
    """Error strings as Evolution builds them from the npm `jsonschema` validator (abstract.router.ts)."""
    errors: list[str] = []

    def fail(text: str):
        errors.append(schema.get("description") or f"{path} {text}".replace("instance.", "", 1))

    if "type" in schema and not _JSON_TYPES[schema["type"]](value):
        fail(f"is not of a type(s) {schema['type']}")
    if "enum" in schema and not any(type(value) is type(e) and value == e for e in schema["enum"]):
        fail("is not one of enum values: " + ",".join(json.dumps(e).strip('"') for e in schema["enum"]))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            fail(f"does not meet minimum length of {schema['minItems']}")
        for i, item in enumerate(value if "items" in schema else []):
            errors += _schema_errors(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                errors += _schema_errors(value[name], sub, f"{path}.{name}")
        for name in schema.get("required", []):
            if name not in value:
                fail(f'requires property "{name}"')
    return errors


# mime-types' extension() (first extension in mime-db) for the types a bot meets; else stdlib.
_MIME_EXT = {"audio/ogg": "oga", "audio/mpeg": "mpga", "audio/mp4": "m4a", "image/jpeg": "jpeg",
             "image/png": "png", "image/webp": "webp", "video/mp4": "mp4", "application/pdf": "pdf"}


def _mime_extension(mimetype: str) -> str:
    base = mimetype.split(";")[0].strip().lower()
    ext = _MIME_EXT.get(base) or (mimetypes.guess_extension(base) or "").lstrip(".")
    return ext or "false"  # JS: `${id}.${false}` when mime-types does not know the type


def _evo_error(status: int, message, error: str | None = None) -> tuple[int, dict]:
    """Evolution's error body (src/main.ts error middleware)."""
    if error is None:
        error = HTTPStatus(status).phrase
    return status, {"status": status, "error": error, "response": {"message": message}}


_PROXY_HTML = ("<html>\r\n<head><title>{code} {phrase}</title></head>\r\n<body>\r\n"
               "<center><h1>{code} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
               "</body>\r\n</html>\r\n")

# Default `message` of a scripted Evolution failure, as seen from real servers.
_EVO_FAIL_MESSAGES = {
    400: ["Error: Connection Closed"],  # instance disconnected from WhatsApp
    401: "Unauthorized",
    500: "Connection Closed",
}

_EVO_ROUTES = {
    ("message", "sendtext"): "sendText",
    ("chat", "sendpresence"): "sendPresence",
    ("chat", "markmessageasread"): "markMessageAsRead",
    ("chat", "getbase64frommediamessage"): "getBase64FromMediaMessage",
    ("message", "sendwhatsappaudio"): "sendWhatsAppAudio",
}


# What whatsapp.business.service.ts answers with BadRequestException('Method not available on WhatsApp Business API').
_BUSINESS_UNAVAILABLE = {"sendPresence", "markMessageAsRead"}

# GET routes of the doctor and the panel (src/api/routes/instance.router.ts, integrations/event/webhook/webhook.router.ts).
_EVO_GET_ROUTES = {
    ("instance", "connectionstate"): "connectionState",
    ("instance", "connect"): "connect",
    ("webhook", "find"): "findWebhook",
}
_EVO_DELETE_ROUTES = {("instance", "logout"): "logout"}


def _qr_png(code: str, cells: int = 33, scale: int = 8) -> str:
    """A data: URL of a PNG that looks like a QR code (a pattern from `code`), as qrcode.toDataURL gives Evolution."""
    import struct
    import zlib

    bits = hashlib.sha256(code.encode()).digest() * 20
    def dark(x, y):
        for fx, fy in ((0, 0), (cells - 7, 0), (0, cells - 7)):  # the three finder squares
            if fx <= x < fx + 7 and fy <= y < fy + 7:
                dx, dy = x - fx, y - fy
                return dx in (0, 6) or dy in (0, 6) or (2 <= dx <= 4 and 2 <= dy <= 4)
        index = y * cells + x
        return bool(bits[index // 8] >> (index % 8) & 1)
    margin, size = 3, (cells + 6) * scale
    rows = []
    for py in range(size):
        y = py // scale - margin
        row = bytearray([0])
        for px in range(size):
            x = px // scale - margin
            row.append(0 if 0 <= x < cells and 0 <= y < cells and dark(x, y) else 255)
        rows.append(bytes(row))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


class FakeEvolution(_FakeHTTPServer):
    """Evolution API v2 REST as a bot uses it: sendText, sendPresence, markMessageAsRead, getBase64FromMediaMessage,
    plus what the doctor reads: instance/connectionState, instance/fetchInstances and webhook/find, and what
    the panel's Conectar WhatsApp page does: instance/create, instance/connect and instance/logout (2.3.7's
    instance.controller.ts). A created Baileys instance is `connecting` with a QR code until `scan_qr()`.

    `instances` is a set of names or a dict name -> instance token (also accepted as `apikey`).
    `time_scale` multiplies the waits Evolution really does inside the request (`delay` of sendText
    and sendPresence); 1.0 is faithful, 0 makes them instant.
    """

    def __init__(self, api_key: str = "test-key", instances=("shop",), *,
                 time_scale: float = 1.0, port: int = 0):
        super().__init__(port)
        self.api_key = api_key
        if isinstance(instances, str):
            instances = [instances]
        tokens = dict(instances) if isinstance(instances, dict) else {name: None for name in instances}
        self.instances: dict[str, str | None] = tokens
        self.instance_ids = {name: str(uuid.uuid4()) for name in tokens}
        self.time_scale = time_scale
        self.not_on_whatsapp: set[str] = set()
        self._media: dict[str, dict] = {}
        self._sent: list[dict] = []
        self.audios: list[dict] = []  # performed sendWhatsAppAudio: {instance, number, audio (bytes as given)}
        self.read_keys: list[dict] = []  # the keys markMessageAsRead really marked
        self.states: dict[str, tuple[str, int]] = {name: ("open", 200) for name in tokens}  # see set_state
        self.webhooks: dict[str, dict] = {}  # instance -> Webhook row, see set_webhook
        self.business: set[str] = set()  # instances on integration WHATSAPP-BUSINESS (the Cloud API), see below
        self.qr_codes: dict[str, dict] = {}  # instance -> Baileys' qrcode {pairingCode, code, base64, count}

    # -- scripting ---------------------------------------------------------------------------
    def fail_next(self, route: str, status=500, times: int = 1, *, message=None, body=None):
        """Answer the next `times` calls of `route` with `status` ("drop" closes the connection unanswered).

        The body is Evolution's error shape with `message` (a realistic default per status);
        502/503/504 answer with a reverse proxy's HTML page; `body` overrides it all.
        """
        self._push_fault(route, {"status": status, "message": message, "body": body}, times)

    def delay_next(self, route: str, seconds: float, times: int = 1):
        """Wait `seconds` before handling the next `times` calls of `route` (the work is still done)."""
        self._push_fault(route, {"delay": seconds}, times)

    def null_next(self, route: str = "getBase64FromMediaMessage", times: int = 1):
        """Answer the next calls with 201 and a JSON `null` body, as getBase64FromMediaMessage does for a gone message."""
        self._push_fault(route, {"status": 201, "message": None, "body": JSON_NULL}, times)

    def add_media(self, message_id: str, mimetype: str, data: bytes, media_type: str = "audioMessage",
                  *, file_name: str | None = None, caption: str | None = None):
        """Make getBase64FromMediaMessage return `data` for the message with key.id `message_id`."""
        with self._lock:
            self._media[message_id] = {"mimetype": mimetype, "data": bytes(data), "media_type": media_type,
                                       "file_name": file_name, "caption": caption}

    def set_state(self, instance: str, state: str, status_reason: int = 200):
        """The instance's connection state ("open", "close", "connecting") as connectionState and fetchInstances show it.

        `status_reason` is Baileys' disconnect code (401 logged out from the phone, 403 banned).
        """
        with self._lock:
            self.states[instance] = (state, status_reason)

    def renew_qr(self, instance: str):
        """Baileys emits a new QR code (it does so about every 20-40 s while nobody scans): `count` goes up."""
        with self._lock:
            count = self.qr_codes.get(instance, {}).get("count", 0) + 1
            code = f"2@{secrets.token_urlsafe(24)},{instance},{count}"
            self.qr_codes[instance] = {"pairingCode": None, "code": code, "base64": _qr_png(code), "count": count}

    def scan_qr(self, instance: str):
        """The shop's phone reads the QR code shown: the instance's state becomes open (AssertionError if none was shown)."""
        with self._lock:
            assert self.qr_codes.get(instance, {}).get("base64"), f"no QR code was shown for {instance!r}"
            self.states[instance] = ("open", 200)
            self.qr_codes.pop(instance, None)

    def set_webhook(self, instance: str, url: str, *, enabled: bool = True, events=("MESSAGES_UPSERT",),
                    by_events: bool = False, headers=None):
        """Configure the instance's own webhook (what POST /webhook/set/{instance} stores)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        with self._lock:
            self.webhooks[instance] = {
                "id": "cm" + secrets.token_hex(11), "url": url, "headers": headers, "enabled": enabled,
                "events": list(events), "webhookByEvents": by_events, "webhookBase64": False,
                "createdAt": now, "updatedAt": now, "instanceId": self.instance_ids[instance],
            }

    # -- inspection --------------------------------------------------------------------------
    def calls(self, route: str) -> list[dict]:
        """Recorded requests of one route (answered or not), in arrival order."""
        with self._lock:
            return [r for r in self.requests if r["route"] == route]

    def sent_texts(self) -> list[tuple[str, str, str]]:
        """(instance, number, text) of every sendText Evolution performed, in order."""
        with self._lock:
            return [(s["instance"], s["number"], s["text"]) for s in self._sent]

    def sent_messages(self) -> list[dict]:
        """The 201 bodies of performed sendTexts (their key.id is what the bot must remember as its own)."""
        with self._lock:
            return [s["response"] for s in self._sent]

    def wait_for(self, what, timeout: float = 5.0):
        """Wait until `what()` is true, or until at least `what` texts were sent; AssertionError on timeout."""
        predicate = what if callable(what) else (lambda: len(self._sent) >= what)
        return self._wait_until(predicate, timeout, lambda: f"sent_texts={self.sent_texts()!r}, "
                                f"requests={[(r['route'], r['status']) for r in self.requests]!r}")

    # -- server side -------------------------------------------------------------------------
    def _handle(self, record: dict):
        split = urlsplit(record["path"])
        segments = split.path.rstrip("/").split("/")
        route = instance = None
        if record["method"] == "POST" and len(segments) == 4 and segments[3]:
            route = _EVO_ROUTES.get((segments[1].lower(), segments[2].lower()))
            instance = unquote(segments[3]) if route else None
        elif record["method"] == "GET" and len(segments) == 4 and segments[3]:
            route = _EVO_GET_ROUTES.get((segments[1].lower(), segments[2].lower()))
            instance = unquote(segments[3]) if route else None
        elif record["method"] == "DELETE" and len(segments) == 4 and segments[3]:
            route = _EVO_DELETE_ROUTES.get((segments[1].lower(), segments[2].lower()))
            instance = unquote(segments[3]) if route else None
        elif record["method"] == "GET" and [x.lower() for x in segments[1:]] == ["instance", "fetchinstances"]:
            route = "fetchInstances"
        elif record["method"] == "POST" and [x.lower() for x in segments[1:]] == ["instance", "create"]:
            route = "createInstance"
        record.update(route=route, instance=instance, json=None)

        # express.json(): only JSON content types are parsed; a parse error is a 400 for any path.
        body, parse_error = {}, None
        if "json" in record["headers"].get("content-type", "") and record["raw"]:
            try:
                body = record["json"] = json.loads(record["raw"])
            except ValueError as exc:
                parse_error = str(exc)
        self._record(record)

        fault = self._pop_fault(route) if route else None
        if fault and "delay" in fault:
            self._sleep(fault["delay"])
        elif fault:
            return self._scripted_failure(fault)
        if parse_error:  # body-parser errors carry no `error` field, hence this odd pairing
            return _evo_error(400, parse_error, "Internal Server Error")  # text is Python's, not V8's
        if route is None:
            return _evo_error(404, [f"Cannot {record['method']} {record['path']}"])
        if route == "fetchInstances":  # no instance guard; the global key or an instance's token
            return self._fetchInstances(record["headers"].get("apikey"), parse_qs(split.query))
        if route == "createInstance":
            return self._createInstance(record["headers"].get("apikey"), body)
        # Guards run in this order: instanceExistsGuard, instanceLoggedGuard, authGuard.apikey.
        if instance not in self.instances:
            return _evo_error(404, [f'The "{instance}" instance does not exist'])
        key = record["headers"].get("apikey")
        if not key or key not in (self.api_key, self.instances[instance]):
            return _evo_error(401, "Unauthorized")
        schema = _SCHEMAS.get(route)
        errors = _schema_errors(body, schema) if schema else []
        if errors:  # BadRequestException(message) wraps the list once more: [[...]]
            return _evo_error(400, [errors])
        if instance in self.business and route in _BUSINESS_UNAVAILABLE:
            return _evo_error(400, ["Method not available on WhatsApp Business API"])
        if instance in self.business and route == "getBase64FromMediaMessage":
            return self._business_base64(body)
        return getattr(self, "_" + route)(instance, body)

    def _business_base64(self, body: dict):
        """whatsapp.business.service.ts getBase64FromMediaMessage(): no lookup by key.id; it reads the whole message
        it is given (`messageType`, `message[messageType]`, `message.base64`), so a key alone is a TypeError → 400."""
        message = body.get("message") if isinstance(body.get("message"), dict) else {}
        if not isinstance(message.get("messageType"), str):
            return _evo_error(400, ["TypeError: Cannot read properties of undefined (reading 'includes')"])
        kind = message["messageType"] if "Message" in message["messageType"] else message["messageType"] + "Message"
        content = (message.get("message") or {}).get(kind) or {}
        return 201, {"mediaType": message["messageType"], "fileName": content.get("fileName"),
                     "caption": content.get("caption"), "size": {"fileLength": content.get("fileLength")},
                     "mimetype": content.get("mime_type"), "base64": (message.get("message") or {}).get("base64")}

    def _scripted_failure(self, fault: dict):
        status = fault["status"]
        if status == "drop":
            return None
        if fault["body"] is not None:
            return status, fault["body"]
        if status in (502, 503, 504) and fault["message"] is None:
            return status, _PROXY_HTML.format(code=status, phrase=HTTPStatus(status).phrase)
        message = fault["message"]
        if message is None:
            message = _EVO_FAIL_MESSAGES.get(status, HTTPStatus(status).phrase)
        return _evo_error(status, message)

    def _connectionState(self, instance: str, body: dict):
        """instance.controller.ts connectionState(): the live state of the instance's socket."""
        with self._lock:
            state = self.states[instance][0]
        return 200, {"instance": {"instanceName": instance, "state": state}}

    def _createInstance(self, key, body: dict):
        """instanceLoggedGuard (a name in use: 403), authGuard (only the global key: there is no instance yet),
        instanceSchema, then createInstance(): 201 with the instance, its token (`hash`) and, for Baileys with
        `qrcode: true`, the QR code Baileys has so far (none yet right after the socket opens)."""
        name = body.get("instanceName") if isinstance(body, dict) else None
        with self._lock:
            if name in self.instances:
                return _evo_error(403, [f'This name "{name}" is already in use.'])
        if not key:
            return _evo_error(401, "Unauthorized")
        if key != self.api_key:
            return _evo_error(401, "Unauthorized")
        errors = _schema_errors(body, _SCHEMAS["createInstance"])
        if errors:
            return _evo_error(400, [errors])
        if not isinstance(name, str) or not name:
            return _evo_error(400, ['The "instanceName" cannot be empty'])
        integration = body.get("integration") or "WHATSAPP-BAILEYS"
        if integration not in ("WHATSAPP-BAILEYS", "WHATSAPP-BUSINESS", "EVOLUTION"):
            return _evo_error(400, ["Invalid integration"])
        token = body.get("token") or str(uuid.uuid4()).upper()
        connecting = integration == "WHATSAPP-BAILEYS" and body.get("qrcode") is True
        with self._lock:
            self.instances[name] = token
            self.instance_ids[name] = str(uuid.uuid4())
            self.states[name] = ("connecting" if connecting else "close", 200)
        if connecting:  # the controller waits 5 s after opening the socket: Baileys has its first QR code by then
            self.renew_qr(name)
        return 201, {
            "instance": {"instanceName": name, "instanceId": self.instance_ids[name], "integration": integration,
                         "status": "connecting" if connecting else "close"},
            "hash": token,
            "webhook": {}, "websocket": {}, "rabbitmq": {}, "nats": {}, "sqs": {},
            "settings": {"rejectCall": False, "msgCall": "", "groupsIgnore": False, "alwaysOnline": False,
                         "readMessages": False, "readStatus": False, "syncFullHistory": False, "wavoipToken": ""},
            **({"qrcode": dict(self.qr_codes[name])} if connecting else {}),
        }

    def _connect(self, instance: str, body: dict):
        """connectToWhatsapp(): open → the connectionState body; connecting → Baileys' qrCode; close → a new socket
        (and, in this fake, its first QR code at once: Evolution waits 2 s for it)."""
        with self._lock:
            state = self.states[instance][0]
            if state == "open":
                return 200, {"instance": {"instanceName": instance, "state": "open"}}
            if state == "close":
                self.states[instance] = ("connecting", 200)
        if state == "close" or instance not in self.qr_codes:
            self.renew_qr(instance)
        with self._lock:
            return 200, dict(self.qr_codes[instance])

    def _logout(self, instance: str, body: dict):
        """logout(): 400 when already closed; else the socket is logged out and the instance kept (DEL_INSTANCE=false)."""
        with self._lock:
            if self.states[instance][0] == "close":
                return _evo_error(400, [f'The "{instance}" instance is not connected'])
            self.states[instance] = ("close", 401)
            self.qr_codes.pop(instance, None)
        return 200, {"status": "SUCCESS", "error": False, "response": {"message": "Instance logged out"}}

    def _findWebhook(self, instance: str, body: dict):
        """event.controller.ts get(): the Webhook row, or null when the instance has none of its own."""
        with self._lock:
            row = self.webhooks.get(instance)
        return 200, dict(row) if row else None

    def _fetchInstances(self, key, query: dict):
        """instance.controller.ts fetchInstances() → monitor.service.ts instanceInfo(): Instance rows."""
        with self._lock:
            if key and key == self.api_key:
                names = list(self.instances)
            else:
                names = [name for name, token in self.instances.items() if key and token == key]
                if not names:
                    return _evo_error(401, "Unauthorized")
            wanted = (query.get("instanceName") or [None])[0]
            if wanted is not None:
                if wanted not in self.instances:
                    return _evo_error(404, [f'Instance "{wanted}" not found'])
                names = [name for name in names if name == wanted]
            return 200, [self._instance_row(name) for name in names]

    def _instance_row(self, name: str) -> dict:
        state, reason = self.states[name]
        closed = state == "close"
        return {
            "id": self.instance_ids[name], "name": name, "connectionStatus": state,
            "ownerJid": "5511999999900@s.whatsapp.net" if state == "open" else None,
            "profileName": "Loja Exemplo", "profilePicUrl": None, "integration": "WHATSAPP-BAILEYS",
            "number": None, "businessId": None, "token": self.instances[name] or "", "clientName": "evolution",
            "disconnectionReasonCode": reason if closed else None,
            "disconnectionObject": None, "disconnectionAt": None,
            "createdAt": "2026-11-01T12:00:00.000Z", "updatedAt": "2026-11-01T12:00:00.000Z",
            "Chatwoot": None, "Proxy": None, "Rabbitmq": None, "Nats": None, "Sqs": None, "Websocket": None,
            "Setting": None, "_count": {"Message": 0, "Contact": 0, "Chat": 0},
        }

    def _is_on_whatsapp(self, number: str, jid: str) -> bool:
        candidates = {number, jid, jid.split("@")[0], re.sub(r"\D", "", number)}
        return not (candidates & self.not_on_whatsapp)

    def _typing(self, delay_ms):
        if delay_ms:
            self._sleep(delay_ms / 1000 * self.time_scale)

    def _sendText(self, instance: str, body: dict):
        number, text = body["number"], body["text"]
        if not text or not text.strip():
            return _evo_error(400, ["Text is required"])
        jid = create_jid(number)
        if instance in self.business:  # sendMessageWithTyping(): Graph's answer turned into messageRaw, no check
            response = {"key": {"fromMe": True, "id": "wamid.HBgN" + secrets.token_hex(16).upper(), "remoteJid": jid},
                        "message": {"conversation": text}, "messageType": "conversation",
                        "messageTimestamp": int(time.time()), "instanceId": self.instance_ids[instance],
                        "status": "PENDING", "source": "unknown"}
            with self._lock:
                self._sent.append({"instance": instance, "number": number, "text": text, "response": response})
            return 201, response
        if not self._is_on_whatsapp(number, jid):
            return _evo_error(400, [{"jid": jid, "exists": False, "number": number}])
        self._typing(body.get("delay"))
        now = int(time.time())
        response = {  # prepareMessage() of the sent message, cf. payload 17
            "key": {"remoteJid": jid, "fromMe": True, "id": "3EB0" + secrets.token_hex(9).upper()},
            "pushName": "Você",
            "status": "PENDING",
            "message": {"conversation": text},
            "contextInfo": {
                "mentionedJid": [],
                "groupMentions": [],
                "ephemeralSettingTimestamp": {"low": now - 172800, "high": 0, "unsigned": False},
                "disappearingMode": {"initiator": 0},
            },
            "messageType": "conversation",
            "messageTimestamp": now,
            "instanceId": self.instance_ids[instance],
            "source": "web",
        }
        with self._lock:
            self._sent.append({"instance": instance, "number": number, "text": text, "response": response})
        return 201, response

    def _sendWhatsAppAudio(self, instance: str, body: dict):
        """sendWhatsAppAudio(): `audio` is a URL or base64; Evolution runs it through ffmpeg into an OGG/Opus voice note
        (`encoding`, default true) and answers the sent message, like sendText (cf. payload 17)."""
        number, audio = body["number"], body["audio"]
        jid = create_jid(number)
        if not self._is_on_whatsapp(number, jid):
            return _evo_error(400, [{"jid": jid, "exists": False, "number": number}])
        if audio.startswith(("http://", "https://")):
            return _evo_error(400, ["the fake fetches no URLs: send base64"])
        try:
            data = base64.b64decode(audio, validate=True)
        except ValueError:
            return _evo_error(500, ["Error: ffmpeg exited with code 1: Invalid data found when processing input"],
                              "Internal Server Error")
        if not data:
            return _evo_error(400, ["Owned media must be a url or base64"])
        self._typing(body.get("delay"))
        now = int(time.time())
        response = {
            "key": {"remoteJid": jid, "fromMe": True, "id": "3EB0" + secrets.token_hex(9).upper()},
            "pushName": "Você", "status": "PENDING",
            "message": {"audioMessage": {"url": "https://mmg.whatsapp.net/v/t62.7117-24/fake.enc",
                                         "mimetype": "audio/ogg; codecs=opus", "fileLength": str(len(data)),
                                         "seconds": max(1, len(data) // 48000), "ptt": True}},
            "messageType": "audioMessage", "messageTimestamp": now, "instanceId": self.instance_ids[instance],
            "source": "unknown",
        }
        with self._lock:
            self.audios.append({"instance": instance, "number": number, "audio": data, "response": response})
        return 201, response

    def _sendPresence(self, instance: str, body: dict):
        number = body["number"]
        if not self._is_on_whatsapp(number, create_jid(number)):
            # The not-on-WhatsApp error is thrown inside a try and re-wrapped with error.toString().
            return _evo_error(400, ["[object Object]"])
        self._typing(body.get("delay"))
        return 201, {"presence": body["presence"]}

    def _markMessageAsRead(self, instance: str, body: dict):
        # 2.3.7 keeps only phone and group JIDs (isPnUser / isJidGroup): '@lid' keys are dropped silently.
        kept = [read for read in body["readMessages"]
                if read["remoteJid"].endswith(("@s.whatsapp.net", "@g.us"))]
        with self._lock:
            self.read_keys.extend(kept)
        return 201, {"message": "Read messages", "read": "success"}

    def _getBase64FromMediaMessage(self, instance: str, body: dict):
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            return _evo_error(400, ["TypeError: Cannot read properties of undefined (reading 'key')"])
        message_id = (message.get("key") or {}).get("id")
        with self._lock:
            media = self._media.get(message_id)
        if media is None:
            return _evo_error(400, ["Message not found"])
        mimetype = media["mimetype"]
        if body.get("convertToMp4") and media["media_type"] == "audioMessage":
            mimetype = "audio/mp4"  # the real server transcodes; the fake returns the same bytes
        result = {
            "mediaType": media["media_type"],
            "fileName": media["file_name"] or f"{message_id}.{_mime_extension(media['mimetype'])}",
            "size": {"fileLength": str(len(media["data"]))},
            "mimetype": mimetype,
            "base64": base64.b64encode(media["data"]).decode(),
            "buffer": None,
        }
        if media["caption"] is not None:
            result["caption"] = media["caption"]
        return 201, result


# --------------------------------------------------------------------------------------------
# Gemini API (generativelanguage.googleapis.com) for the google-genai SDK
# --------------------------------------------------------------------------------------------

_GEMINI_PATH = re.compile(r"^/(v1|v1beta)/models/([^/:]+):generateContent$")
_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                  429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_GOOGLE_MESSAGES = {
    429: "You exceeded your current quota, please check your plan and billing details. For more "
         "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
    500: "An internal error has occurred. Please retry or report in "
         "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The request timed out. Please try again.",
}
_KEY_INVALID = "API key not valid. Please pass a valid API key."
_NO_KEY = ("Method doesn't allow unregistered callers (callers without established identity). "
           "Please use API Key or other form of API consumer identity to call this API.")
_GOOGLE_404_HTML = ("<!DOCTYPE html>\n<html lang=en>\n<title>Error 404 (Not Found)!!1</title>\n"
                    "<p><b>404.</b> <ins>That\u2019s an error.</ins>\n<p>The requested URL <code>{path}"
                    "</code> was not found on this server.  <ins>That\u2019s all we know.</ins>\n")


def _google_error(status: int, message: str | None = None, details: list | None = None):
    error = {"code": status, "message": message or _GOOGLE_MESSAGES.get(status, HTTPStatus(status).phrase),
             "status": _GOOGLE_STATUS.get(status, "UNKNOWN")}
    if details:
        error["details"] = details
    return status, {"error": error}


def _quota_details(model: str, retry_seconds: int) -> list:
    return [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                         "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                         "quotaDimensions": {"location": "global", "model": model},
                         "quotaValue": "10"}]},
        {"@type": "type.googleapis.com/google.rpc.Help",
         "links": [{"description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_seconds}s"},
    ]


def _safety_ratings(blocked_category: str = "HARM_CATEGORY_HARASSMENT") -> list:
    categories = ["HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_HATE_SPEECH",
                  "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_DANGEROUS_CONTENT"]
    return [{"category": c, "probability": "HIGH", "blocked": True} if c == blocked_category
            else {"category": c, "probability": "NEGLIGIBLE"} for c in categories]


# The prebuilt voices of the TTS models (speechConfig.voiceConfig.prebuiltVoiceConfig.voiceName).
_TTS_VOICES = {"Zephyr", "Puck", "Charon", "Kore", "Fenrir", "Leda", "Orus", "Aoede", "Callirrhoe", "Autonoe",
               "Enceladus", "Iapetus", "Umbriel", "Algieba", "Despina", "Erinome", "Algenib", "Rasalgethi",
               "Laomedeia", "Achernar", "Alnilam", "Schedar", "Gacrux", "Pulcherrima", "Achird", "Zubenelgenubi",
               "Vindemiatrix", "Sadachbia", "Sadaltager", "Sulafat"}


def tts_voice_name(body) -> str | None:
    """generationConfig.speechConfig.voiceConfig.prebuiltVoiceConfig.voiceName; Google's JSON parser takes the
    fields in lowerCamelCase or snake_case alike (google-genai sends speechConfig's insides in snake_case)."""
    value = (body or {}).get("generationConfig") or {}
    for camel, snake in (("speechConfig", "speech_config"), ("voiceConfig", "voice_config"),
                         ("prebuiltVoiceConfig", "prebuilt_voice_config"), ("voiceName", "voice_name")):
        value = value.get(camel, value.get(snake)) if isinstance(value, dict) else None
    return value


def _wants_audio(body) -> bool:
    config = body.get("generationConfig") if isinstance(body, dict) else None
    return isinstance(config, dict) and "AUDIO" in (config.get("responseModalities") or [])


class FakeGemini(_FakeHTTPServer):
    """The Gemini API's generateContent for the real google-genai SDK pointed at `url` via HttpOptions(base_url=...).

    `models` (optional) limits the accepted model names; others get Google's 404 NOT_FOUND.
    """

    def __init__(self, api_key: str = "test-gemini-key", *, models=None, port: int = 0):
        super().__init__(port)
        self.api_key = api_key
        self.models = set(models) if models else None
        self.responder = None  # callable(request_json) -> str (reply text) or dict (whole response JSON)
        self.speech = b"\x00\x01" * 2400  # PCM a TTS model answers with (0.1 s of 24 kHz 16-bit mono)
        self._replies = 0
        self._gate = threading.Event()
        self._gate.set()

    # -- scripting ---------------------------------------------------------------------------
    def reply_with(self, text: str):
        """Answer every following request with `text`."""
        self.responder = lambda request_json: text

    def fail_next(self, status=503, times: int = 1, *, body=None, retry_seconds: int = 30):
        """Answer the next `times` requests with Google's error for `status` (429/500/503/...), or "drop"."""
        self._push_fault(None, {"status": status, "body": body, "retry": retry_seconds}, times)

    def delay_next(self, seconds: float, times: int = 1):
        """Wait `seconds` before answering the next `times` requests normally (to hit SDK timeouts)."""
        self._push_fault(None, {"delay": seconds}, times)

    def block_next(self, times: int = 1, reason: str = "SAFETY"):
        """Answer the next requests with a blocked prompt: promptFeedback.blockReason and no candidates."""
        self._push_fault(None, {"block": reason}, times)

    def empty_next(self, times: int = 1, finish_reason: str = "SAFETY"):
        """Answer the next requests with a candidate that has `finish_reason` and no content."""
        self._push_fault(None, {"empty": finish_reason}, times)

    def speak_with(self, pcm: bytes):
        """Answer every following text-to-speech request (responseModalities ["AUDIO"]) with this PCM."""
        self.speech = bytes(pcm)

    def fail_speech_next(self, status=503, times: int = 1):
        """Answer the next `times` text-to-speech requests with Google's error for `status` (text ones are not touched)."""
        self._push_fault("speech", {"status": status, "body": None, "retry": 30}, times)

    def speech_requests(self) -> list[dict]:
        """The recorded text-to-speech requests (generationConfig.responseModalities holds "AUDIO")."""
        return [r for r in self.requests if _wants_audio(r.get("body"))]

    def hold(self):
        """Keep every request waiting (already recorded) until release(): 'Gemini is still answering'."""
        self._gate.clear()

    def release(self):
        """Let held and future requests be answered."""
        self._gate.set()

    def stop(self):
        super().stop()
        self._gate.set()

    # -- inspection --------------------------------------------------------------------------
    def wait_for(self, what, timeout: float = 5.0):
        """Wait until `what()` is true, or until at least `what` requests arrived; AssertionError on timeout."""
        predicate = what if callable(what) else (lambda: len(self.requests) >= what)
        return self._wait_until(predicate, timeout, lambda: f"{len(self.requests)} request(s) arrived")

    def _last_user_content(self, i: int) -> dict:
        contents = (self.requests[i].get("body") or {}).get("contents") or []
        users = [c for c in contents if c.get("role", "user") == "user"]
        return users[-1] if users else {}

    def parts(self, i: int = -1) -> list[dict]:
        """Parts of the last user content of request `i`, as sent (inline data: {"inlineData": {...}})."""
        return list(self._last_user_content(i).get("parts") or [])

    def user_texts(self, i: int = -1) -> list[str]:
        """All text parts of the last user content of request `i`."""
        return [p["text"] for p in self.parts(i) if "text" in p]

    def inline_data(self, i: int = -1) -> list[tuple[str, bytes]]:
        """(mime type, decoded bytes) of the inline data parts of the last user content of request `i`."""
        out = []
        for p in self.parts(i):
            blob = p.get("inlineData") or p.get("inline_data")
            if blob:
                mime = blob.get("mimeType") or blob.get("mime_type")
                out.append((mime, base64.urlsafe_b64decode(blob.get("data", ""))))  # the SDK sends URL-safe base64
        return out

    def system_text(self, i: int = -1) -> str | None:
        """The system instruction text of request `i`, or None if none was sent."""
        si = (self.requests[i].get("body") or {}).get("systemInstruction")
        if not si:
            return None
        return "".join(p.get("text", "") for p in si.get("parts", []))

    # -- server side -------------------------------------------------------------------------
    def _handle(self, record: dict):
        split = urlsplit(record["path"])
        match = _GEMINI_PATH.match(split.path) if record["method"] == "POST" else None
        record.update(api_version=match and match.group(1), model=match and unquote(match.group(2)),
                      body=None)
        try:
            record["body"] = json.loads(record["raw"] or b"null")
        except ValueError:
            pass
        self._record(record)
        if match is None:
            return 404, _GOOGLE_404_HTML.format(path=split.path)

        while not self._gate.wait(0.05):  # hold(): wait, but never outlive stop()
            if self._closing.is_set():
                break
        fault = self._pop_fault("speech" if _wants_audio(record["body"]) else None)
        if fault and "delay" in fault:
            self._sleep(fault["delay"])
            fault = None
        if fault and "status" in fault:
            if fault["status"] == "drop":
                return None
            if fault["body"] is not None:
                return fault["status"], fault["body"]
            details = _quota_details(record["model"], fault["retry"]) if fault["status"] == 429 else None
            return _google_error(fault["status"], details=details)

        key = record["headers"].get("x-goog-api-key") or (parse_qs(split.query).get("key") or [None])[0]
        if not key:
            return _google_error(403, _NO_KEY)
        if key != self.api_key:
            return _google_error(400, _KEY_INVALID, [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                 "message": _KEY_INVALID},
            ])
        if self.models is not None and record["model"] not in self.models:
            return _google_error(404, f"models/{record['model']} is not found for API version "
                                 f"{record['api_version']}, or is not supported for generateContent. "
                                 "Call ListModels to see the list of available models and their "
                                 "supported methods.")
        body = record["body"]
        if not isinstance(body, dict):
            return _google_error(400, "Invalid JSON payload received.")
        if not body.get("contents"):
            return _google_error(400, "* GenerateContentRequest.contents: contents is not specified\n")
        for n, content in enumerate(body["contents"]):
            if not content.get("parts"):
                return _google_error(400, f"* GenerateContentRequest.contents[{n}].parts: "
                                          "contents.parts must not be empty.\n")
        if _wants_audio(body):
            return self._speech(record)
        return 200, self._success(record, fault)

    def _speech(self, record: dict) -> tuple[int, dict]:
        """A TTS model's answer: one inlineData part, raw 16-bit little-endian PCM at 24 kHz, base64 (standard
        alphabet), mimeType audio/L16;codec=pcm;rate=24000. A model without "tts" in its name refuses AUDIO."""
        config = record["body"].get("generationConfig") or {}
        if "tts" not in record["model"]:
            return _google_error(400, "The requested combination of response modalities (AUDIO) is not supported "
                                      "by the model. models/" + record["model"] + " accepts the following combination "
                                      "of response modalities:\n* TEXT\n")
        name = tts_voice_name(record["body"])
        if name and name not in _TTS_VOICES:
            return _google_error(400, f"Voice name {name} is not supported. Please use a voice from the supported list.")
        text_tokens = sum(len(p.get("text", "").split()) for c in record["body"]["contents"] for p in c["parts"]) or 1
        audio_tokens = max(1, len(self.speech) // 1920)  # 25 tokens per second of 24 kHz 16-bit audio
        return 200, {
            "candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "audio/L16;codec=pcm;rate=24000",
                                                                  "data": base64.b64encode(self.speech).decode()}}],
                                        "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": text_tokens, "candidatesTokenCount": audio_tokens,
                              "totalTokenCount": text_tokens + audio_tokens,
                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text_tokens}],
                              "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": audio_tokens}]},
            "modelVersion": record["model"], "responseId": secrets.token_urlsafe(16),
        }

    def _success(self, record: dict, fault: dict | None) -> dict:
        prompt_tokens = sum(len(t.split()) for c in record["body"]["contents"]
                            for t in (p.get("text", "") for p in c.get("parts", []))) or 1
        envelope = {"modelVersion": record["model"], "responseId": secrets.token_urlsafe(16)}
        if fault and "block" in fault:
            return {"promptFeedback": {"blockReason": fault["block"], "safetyRatings": _safety_ratings()},
                    "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
                    **envelope}
        if fault and "empty" in fault:
            return {"candidates": [{"finishReason": fault["empty"], "index": 0,
                                    "safetyRatings": _safety_ratings()}],
                    "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
                    **envelope}
        with self._lock:
            self._replies += 1
            n = self._replies
        reply = self.responder(record["body"]) if self.responder else f"Resposta automática #{n}"
        if isinstance(reply, dict):
            return reply
        out_tokens = len(reply.split()) or 1
        return {
            "candidates": [{"content": {"parts": [{"text": reply}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": prompt_tokens, "candidatesTokenCount": out_tokens,
                              "totalTokenCount": prompt_tokens + out_tokens,
                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}]},
            **envelope,
        }


# --------------------------------------------------------------------------------------------
# Meta Graph API (WhatsApp Cloud API)
# --------------------------------------------------------------------------------------------

def _graph_error(status: int, code: int, message: str, error_type: str = "OAuthException", subcode=None):
    """Graph API's error body: {"error": {message, type, code, error_subcode, fbtrace_id}}."""
    error = {"message": message, "type": error_type, "code": code, "fbtrace_id": "A" + secrets.token_hex(10)}
    if subcode is not None:
        error["error_subcode"] = subcode
    return status, {"error": error}


# Default Graph errors for a scripted failure, by Meta's code (messages as the Cloud API's error codes page words them).
_GRAPH_FAILURES = {
    1: (500, "An unknown error has occurred.", "OAuthException"),
    2: (503, "Service temporarily unavailable", "OAuthException"),
    190: (401, "Error validating access token: Session has expired.", "OAuthException"),
    130429: (400, "(#130429) Rate limit hit", "OAuthException"),
    131056: (400, "(#131056) (Business Account, Consumer Account) pair rate limit hit", "OAuthException"),
    131047: (400, "(#131047) Re-engagement message", "OAuthException"),
    131026: (400, "(#131026) Message undeliverable", "OAuthException"),
}


class FakeGraph(_FakeHTTPServer):
    """The WhatsApp Cloud API as a bot uses it: `POST /{version}/{phone_number_id}/messages` (text, and read
    with typing indicator), `GET /{version}/{media_id}` and the media download behind it.

    Every call needs `Authorization: Bearer <token>` (else 401, code 190), as Graph does; bodies are checked
    for `messaging_product: "whatsapp"` and a text's `to` and `text.body` (else 400, code 100).
    """

    def __init__(self, token: str = "test-graph-token", phone_number_ids=("106540352242922",), *,
                 version: str = "v23.0", port: int = 0):
        super().__init__(port)
        self.token = token
        self.phone_number_ids = set(phone_number_ids)
        self.version = version
        self._media: dict[str, tuple[str, bytes]] = {}
        self.sent: list[dict] = []  # accepted text messages: {phone_number_id, to, body, id}
        self.reads: list[dict] = []  # accepted read receipts: {phone_number_id, message_id, typing}
        self.approved: set[tuple[str, str]] = set()  # (template name, language code) Meta approved
        self.templates: list[dict] = []  # accepted template messages: {phone_number_id, to, name, language, id}

    def add_media(self, media_id: str, mimetype: str, data: bytes):
        with self._lock:
            self._media[media_id] = (mimetype, bytes(data))

    def fail_next(self, route: str, status=None, times: int = 1, *, code: int = 1, message=None, body=None):
        """Answer the next `times` calls of `route` ("messages", "media", "download") with Meta's error `code`
        (status and message from the code's usual answer unless given); "drop" closes the connection."""
        default = _GRAPH_FAILURES.get(code, (400, f"(#{code}) error", "OAuthException"))
        self._push_fault(route, {"status": status or default[0], "code": code, "message": message or default[1],
                                 "type": default[2], "body": body}, times)

    def texts(self) -> list[tuple[str, str, str]]:
        """(phone_number_id, to, body) of every text Meta accepted, in order."""
        with self._lock:
            return [(s["phone_number_id"], s["to"], s["body"]) for s in self.sent]

    def calls(self, route: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["route"] == route]

    def _handle(self, record: dict):
        segments = urlsplit(record["path"]).path.strip("/").split("/")
        route = None
        if record["method"] == "POST" and len(segments) == 3 and segments[2] == "messages":
            route = "messages"
        elif record["method"] == "GET" and len(segments) == 2 and segments[0] == "download":
            route = "download"
        elif record["method"] == "GET" and len(segments) == 2:
            route = "media"
        record.update(route=route, json=None)
        if route == "messages" and record["raw"]:
            try:
                record["json"] = json.loads(record["raw"])
            except ValueError:
                pass
        self._record(record)
        if route is None:
            return _graph_error(400, 2500, "Unknown path components", "OAuthException")
        if route != "download" and segments[0] != self.version:
            return _graph_error(400, 2635, f"Graph API version {segments[0]} is not served here")
        if record["headers"].get("authorization") != f"Bearer {self.token}":
            return _graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        fault = self._pop_fault(route)
        if fault:
            if fault["status"] == "drop":
                return None
            if fault["body"] is not None:
                return fault["status"], fault["body"]
            return _graph_error(fault["status"], fault["code"], fault["message"], fault["type"])
        return getattr(self, "_route_" + route)(segments, record)

    def _route_messages(self, segments, record):
        phone_number_id, body = segments[1], record["json"]
        if phone_number_id not in self.phone_number_ids:
            return _graph_error(400, 100, f"Unsupported post request. Object with ID '{phone_number_id}' does not "
                                "exist, cannot be loaded due to missing permissions, or does not support this "
                                "operation.", "GraphMethodException", 33)
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return _graph_error(400, 100, "(#100) The parameter messaging_product is required.")
        if body.get("status") == "read":
            if not str(body.get("message_id", "")).startswith("wamid."):
                return _graph_error(400, 100, "(#100) Invalid parameter")
            with self._lock:
                self.reads.append({"phone_number_id": phone_number_id, "message_id": body["message_id"],
                                   "typing": (body.get("typing_indicator") or {}).get("type")})
            return 200, {"success": True}
        if body.get("type") == "template":
            return self._template(phone_number_id, body)
        to, text = body.get("to"), (body.get("text") or {}).get("body") if isinstance(body.get("text"), dict) else None
        if body.get("type") != "text" or not isinstance(to, str) or not to:
            return _graph_error(400, 100, "(#100) The parameter to is required.")
        if not isinstance(text, str) or not text.strip():
            return _graph_error(400, 100, "(#100) Param text['body'] is required.")
        wamid = "wamid.HBgN" + base64.b64encode(secrets.token_bytes(24)).decode()
        with self._lock:
            self.sent.append({"phone_number_id": phone_number_id, "to": to, "body": text, "id": wamid})
        return 200, {"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                     "messages": [{"id": wamid}]}

    def _template(self, phone_number_id, body):
        """A template message: `template.name` must be one of `approved` in `template.language.code` (else 404, code 132001)."""
        template = body.get("template") if isinstance(body.get("template"), dict) else {}
        to, name = body.get("to"), template.get("name")
        language = (template.get("language") or {}).get("code") if isinstance(template.get("language"), dict) else None
        if not isinstance(to, str) or not to:
            return _graph_error(400, 100, "(#100) The parameter to is required.")
        if not name or not language:
            return _graph_error(400, 100, "(#100) The parameter template['name'] is required.")
        if (name, language) not in self.approved:
            return _graph_error(404, 132001, f"(#132001) Template name does not exist in the translation",
                                "OAuthException")
        wamid = "wamid.HBgN" + base64.b64encode(secrets.token_bytes(24)).decode()
        with self._lock:
            self.templates.append({"phone_number_id": phone_number_id, "to": to, "name": name, "language": language,
                                   "id": wamid})
        return 200, {"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                     "messages": [{"id": wamid, "message_status": "accepted"}]}

    def _route_media(self, segments, record):
        with self._lock:
            found = self._media.get(segments[1])
        if found is None:
            return _graph_error(400, 100, f"Unsupported get request. Object with ID '{segments[1]}' does not exist",
                                "GraphMethodException", 33)
        mimetype, data = found
        return 200, {"messaging_product": "whatsapp", "url": f"{self.url}/download/{segments[1]}",
                     "mime_type": mimetype, "sha256": hashlib.sha256(data).hexdigest(), "file_size": len(data),
                     "id": segments[1]}

    def _route_download(self, segments, record):
        with self._lock:
            mimetype, data = self._media.get(segments[1], ("", None))
        if data is None:
            return 404, b"", {"Content-Type": "text/plain"}
        return 200, data, {"Content-Type": mimetype}


# --------------------------------------------------------------------------------------------
# Twilio Programmable Messaging (WhatsApp)
# --------------------------------------------------------------------------------------------

def _twilio_error(status: int, code: int, message: str):
    """Twilio REST's error body: {code, message, more_info, status}."""
    return status, {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": status}


class FakeTwilio(_FakeHTTPServer):
    """Twilio's REST API as a WhatsApp bot uses it: `POST /2010-04-01/Accounts/{sid}/Messages.json` (form
    From/To/Body, HTTP basic auth with the account SID and auth token) and a message's media, which
    answers 307 to a CDN URL served without credentials, as Twilio does.
    """

    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "test-twilio-token",
                 senders=("+5511999990000",), *, port: int = 0):
        super().__init__(port)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.senders = set(senders)
        self._media: dict[str, tuple[str, bytes]] = {}
        self.sent: list[dict] = []

    def media_url(self, media_sid: str = None) -> str:
        """Where Twilio says a received media is (`MediaUrl0`)."""
        media_sid = media_sid or "ME" + secrets.token_hex(16)
        message_sid = "MM" + secrets.token_hex(16)
        return f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}/Media/{media_sid}"

    def add_media(self, url: str, mimetype: str, data: bytes):
        with self._lock:
            self._media[url.rsplit("/", 1)[1]] = (mimetype, bytes(data))

    def fail_next(self, route: str, status=500, times: int = 1, *, code: int = 20500, message="Internal Server Error"):
        """Answer the next `times` calls of `route` ("messages", "media") with Twilio's error shape; "drop" hangs up."""
        self._push_fault(route, {"status": status, "code": code, "message": message}, times)

    def texts(self) -> list[tuple[str, str, str]]:
        """(From, To, Body) of every message Twilio accepted, in order."""
        with self._lock:
            return [(s["From"], s["To"], s["Body"]) for s in self.sent]

    def calls(self, route: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["route"] == route]

    def _handle(self, record: dict):
        path = urlsplit(record["path"]).path
        route, match = None, None
        if record["method"] == "POST" and (match := re.fullmatch(r"/2010-04-01/Accounts/([^/]+)/Messages\.json", path)):
            route = "messages"
        elif record["method"] == "GET" and (match := re.fullmatch(
                r"/2010-04-01/Accounts/([^/]+)/Messages/[^/]+/Media/([^/]+)", path)):
            route = "media"
        elif record["method"] == "GET" and path.startswith("/cdn/"):
            route = "cdn"
        form = {k: v[0] for k, v in parse_qs(record["raw"].decode(errors="replace")).items()}
        record.update(route=route, form=form)
        self._record(record)
        if route == "cdn":  # the redirect target: no credentials needed (nor sent by a client that follows it)
            with self._lock:
                mimetype, data = self._media.get(path[5:], ("", None))
            return (200, data, {"Content-Type": mimetype}) if data is not None else (404, b"")
        if route is None:
            return _twilio_error(404, 20404, f"The requested resource {path} was not found")
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if record["headers"].get("authorization") != expected or match.group(1) != self.account_sid:
            return _twilio_error(401, 20003, "Authenticate")
        fault = self._pop_fault(route)
        if fault:
            return None if fault["status"] == "drop" else _twilio_error(fault["status"], fault["code"], fault["message"])
        if route == "media":
            with self._lock:
                known = match.group(2) in self._media
            if not known:
                return _twilio_error(404, 20404, f"The requested resource {path} was not found")
            return 307, b"", {"Location": f"{self.url}/cdn/{match.group(2)}", "Content-Type": "text/plain"}
        if "multipart" in record["headers"].get("content-type", "") or "To" not in form:
            return _twilio_error(400, 21604, "A 'To' phone number is required.")
        if not form.get("From", "").startswith("whatsapp:") or form["From"][9:] not in self.senders:
            return _twilio_error(400, 63007, "Twilio could not find a Channel with the specified From address")
        if not re.fullmatch(r"whatsapp:\+\d{8,15}", form["To"]):
            return _twilio_error(400, 21211, f"The 'To' number {form['To']} is not a valid phone number.")
        if not form.get("Body", "").strip():
            return _twilio_error(400, 21602, "Message body is required.")
        sid = "SM" + secrets.token_hex(16)
        with self._lock:
            self.sent.append({**form, "sid": sid})
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        return 201, {"account_sid": self.account_sid, "api_version": "2010-04-01", "body": form["Body"],
                     "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
                     "error_code": None, "error_message": None, "from": form["From"], "messaging_service_sid": None,
                     "num_media": "0", "num_segments": "1", "price": None, "price_unit": None, "sid": sid,
                     "status": "queued", "subresource_uris": {"media": f"/2010-04-01/Accounts/{self.account_sid}"
                                                                        f"/Messages/{sid}/Media.json"},
                     "to": form["To"], "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json"}


# --------------------------------------------------------------------------------------------
# An events receiver (n8n's Webhook node, a CRM): checks the signature, answers 200, remembers each event
# --------------------------------------------------------------------------------------------

class FakeReceiver(_FakeHTTPServer):
    """`POST /<any path>` with a JSON event: 401 unless `X-Signature-256: sha256=<hex HMAC-SHA256 of the raw body
    with `secret`>` matches (compared in constant time, as the n8n Code node in docs/events.md does), else 200.

    `events` holds each accepted body, in arrival order, with its `X-Event-Id` as `_id` (a copy sent twice is
    there twice); `fail_next` answers 5xx or drops the connection; `down()` refuses connections.
    """

    def __init__(self, secret: str, port: int = 0):
        super().__init__(port)
        self.secret = secret
        self.events: list[dict] = []

    def fail_next(self, status=503, times: int = 1):
        self._push_fault(None, {"status": status}, times)

    def wait_for(self, what, timeout: float = 10.0):
        predicate = what if callable(what) else (lambda: len(self.events) >= what)
        return self._wait_until(predicate, timeout, lambda: f"events={[e['event'] for e in self.events]!r}, "
                                f"requests={[r['status'] for r in self.requests]!r}")

    def _handle(self, record: dict):
        self._record(record)
        fault = self._pop_fault(None)
        if fault:
            return None if fault["status"] == "drop" else (fault["status"], {"message": "Service Unavailable"})
        given = record["headers"].get("x-signature-256", "")
        expected = "sha256=" + hmac.new(self.secret.encode(), record["raw"], hashlib.sha256).hexdigest()
        if record["method"] != "POST" or not hmac.compare_digest(given.encode(), expected.encode()):
            return 401, {"message": "Authorization data is wrong!"}
        try:
            body = json.loads(record["raw"])
        except ValueError:
            return 400, {"message": "body is not JSON"}
        with self._lock:
            self.events.append({**body, "_id": record["headers"].get("x-event-id", "")})
        return 200, {"message": "Workflow was started"}
