"""Logging in to the panel: server-side sessions in Redis, the CSRF token, throttled passwords, and `login_required`.

The session cookie holds only a random id; the session (its CSRF token, its absolute expiry 12 h after
login) lives in Redis under a hash of that id, so logging out, or out of every device, ends it for any
copy of the cookie, and no response ever extends it. Cookies are signed with PANEL_SECRET_KEY, which
has nothing to do with any other secret.
"""

import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from functools import wraps

from flask import Blueprint, g, jsonify, make_response, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from panel.common import deps

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

SESSION_COOKIE = "panel_session"
LOGIN_COOKIE = "panel_login"  # the login form's CSRF token, before any session exists (double submit)
DEVICE_COOKIE = "panel_device"  # signed: this browser logged in before, so others' failures do not delay it
SESSION_SECONDS = 12 * 3600
DEVICE_SECONDS = 30 * 86400
SESSIONS = "wa:panel:sessions"  # every live session's key, for "Sair de todos os aparelhos"
FREE_TRIES = 5  # wrong passwords per address (or device) before each next try must wait 1 s, 2 s, 4 s… up to MAX_WAIT
MAX_WAIT = 900
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",  # data: the QR code
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

# One try: refused while the address (or device) waits or, for an unknown device, while this hour's budget
# of failures is spent; else counted as a failure at once, so parallel guesses cannot race past the check
# (a right password takes its count back). KEYS: the client's counter, the hour's; ARGV: now, FREE_TRIES,
# MAX_WAIT, budget (0: not checked), the hour's end. Returns the seconds to wait, 0 when the try may go on.
TRY_SCRIPT = """
local now, free = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
if n >= free then
  local left = tonumber(redis.call('HGET', KEYS[1], 'last') or '0') + math.min(2 ^ (n - free), tonumber(ARGV[3])) - now
  if left > 0 then return math.ceil(left) end
end
local budget = tonumber(ARGV[4])
if budget > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= budget then
  return math.max(math.ceil(tonumber(ARGV[5]) - now), 1)
end
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[1], 'last', ARGV[1])
redis.call('EXPIRE', KEYS[1], 86400)
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 7200)
return 0
"""


def configure(panel_bp):
    """The CSRF token in every page, and the headers of every panel response: no inline script or framing, no
    sniffing, no referrer outside."""

    @panel_bp.context_processor
    def csrf():  # every page's forms and scripts carry the session's token
        return {"csrf_token": csrf_token()}

    @panel_bp.after_request
    def headers(response):
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def session_key(sid):
    return f"wa:panel:session:{hashlib.sha256(sid.encode()).hexdigest()}"  # Redis never holds a usable cookie


def current():
    """This request's session ({"csrf", "expires", "key"}), or None: no cookie, unknown, ended or expired."""
    if "panel_session" not in g:
        g.panel_session = None
        sid = request.cookies.get(SESSION_COOKIE)
        if sid and len(sid) < 100:
            key = session_key(sid)
            data = {k.decode(): v.decode() for k, v in deps().redis.hgetall(key).items()}
            if data and float(data.get("expires", 0)) > time.time():
                g.panel_session = {**data, "key": key}
    return g.panel_session


def https():
    """Whether the browser used HTTPS: directly, or per a TLS proxy's `X-Forwarded-Proto` (a forged one only
    gets a cookie its own plain-HTTP requests will not send back)."""
    return request.is_secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_cookie(response, name, value, max_age):
    response.set_cookie(name, value, max_age=max_age, path="/panel", httponly=True, samesite="Strict",
                        secure=https())


def start_session(response, redis):
    """A new session, 12 h from now whatever is done with it; stale ids leave the index meanwhile."""
    sid, now = secrets.token_urlsafe(32), time.time()
    key, expires = session_key(sid), int(now + SESSION_SECONDS)
    known = [member for member in redis.smembers(SESSIONS)]
    pipe = redis.pipeline(transaction=True)
    pipe.hset(key, mapping={"csrf": secrets.token_urlsafe(32), "expires": expires})
    pipe.expireat(key, expires)
    pipe.sadd(SESSIONS, key)
    for member in known:
        pipe.exists(member)
    alive = pipe.execute()[3:]
    gone = [member for member, exists in zip(known, alive) if not exists]
    if gone:
        redis.srem(SESSIONS, *gone)
    set_cookie(response, SESSION_COOKIE, sid, expires - int(now))


def end_all_sessions(redis):
    """Log every browser out; returns how many sessions there were."""
    keys = list(redis.smembers(SESSIONS))
    pipe = redis.pipeline(transaction=True)
    if keys:
        pipe.delete(*keys)
    pipe.delete(SESSIONS)
    return pipe.execute()[0] if keys else 0


def csrf_token():
    session = current()
    return session["csrf"] if session else ""


def csrf_ok(given, expected):
    return bool(expected and given) and hmac.compare_digest(str(given).encode(), expected.encode())


def login_required(view):
    """Pages redirect to the login, API calls get 401; state-changing calls need the CSRF token (else 403)."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        api = request.path.startswith("/panel/api/")
        if current() is None:
            if api:
                return jsonify(error="not logged in"), 401
            return redirect(url_for("panel.auth.login", next=request.path))
        if request.method in STATE_CHANGING:
            given = request.headers.get("X-CSRF-Token")
            if not api and given is None:
                given = request.form.get("csrf_token")
            if not csrf_ok(given, csrf_token()):
                return jsonify(error="missing or wrong CSRF token (header X-CSRF-Token)"), 403
        return view(*args, **kwargs)

    return wrapped


def _in(address, networks):
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


def client_address():
    """The client's address: the connection's, or, from a TRUSTED_PROXY, the last X-Forwarded-For hop it added."""
    remote = request.remote_addr or "unknown"
    proxies = deps().settings.trusted_proxy
    if not proxies or not _in(remote, proxies):
        return remote
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    for hop in reversed(hops):  # the proxy appends the address it saw; what a client wrote is further left
        if not _in(hop, proxies):
            return hop
    return hops[0] if hops else remote


def devices():
    return URLSafeTimedSerializer(deps().settings.panel_secret_key, salt="panel-device")


def known_device():
    """This browser's device id when it logged in within DEVICE_SECONDS (a signed cookie), else None."""
    cookie = request.cookies.get(DEVICE_COOKIE)
    if not cookie:
        return None
    try:
        return devices().loads(cookie, max_age=DEVICE_SECONDS)
    except BadSignature:
        return None


def counter_keys(device, now):
    """The try's own counter (per device, or per address) and the hour's counter of failures."""
    own = f"wa:panel:fails:device:{device}" if device else f"wa:panel:fails:{client_address()}"
    return own, f"wa:panel:fails:hour:{int(now // 3600)}"


def seconds_to_wait(device, now):
    """Count this try (see TRY_SCRIPT); the seconds to wait when it is refused, else 0."""
    settings = deps().settings
    budget = 0 if device else settings.panel_max_failed_logins_per_hour
    return int(deps().redis.eval(TRY_SCRIPT, 2, *counter_keys(device, now), repr(now), FREE_TRIES, MAX_WAIT, budget,
                                 (int(now // 3600) + 1) * 3600))


def take_back(device, now):
    """A right password: its try was not a failure."""
    own, hour = counter_keys(device, now)
    pipe = deps().redis.pipeline(transaction=False)
    pipe.delete(own)
    pipe.decr(hour)
    pipe.execute()


@bp.route("/login", methods=["GET", "POST"])
def login():
    settings, redis = deps().settings, deps().redis
    error, status = None, 200
    token = request.cookies.get(LOGIN_COOKIE, "")
    if request.method == "POST":
        now, device = time.time(), known_device()
        if not csrf_ok(request.form.get("csrf_token"), token):
            error, status = "A página expirou. Tente de novo.", 403
        elif wait := seconds_to_wait(device, now):
            error, status = f"Muitas tentativas erradas. Tente de novo em {wait} s.", 429
        elif hmac.compare_digest(request.form.get("password", "").encode(), settings.panel_password.encode()):
            take_back(device, now)
            target = request.args.get("next", "")
            safe = target.startswith("/panel") and not target.startswith("//")
            response = redirect(target if safe else url_for("panel.inbox.inbox"))
            start_session(response, redis)
            set_cookie(response, DEVICE_COOKIE, devices().dumps(device or secrets.token_urlsafe(16)), DEVICE_SECONDS)
            response.delete_cookie(LOGIN_COOKIE, path="/panel")
            log.info("panel: login from %s", client_address())
            return response
        else:
            log.warning("panel: wrong password from %s", client_address())
            error, status = "Senha incorreta.", 401
    elif current() is not None:
        return redirect(url_for("panel.inbox.inbox"))
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
    response = make_response(render_template("panel/login.html", csrf_token=token, error=error), status)
    set_cookie(response, LOGIN_COOKIE, token, 3600)
    return response


def logged_out(json):
    response = jsonify(result="logged out") if json else redirect(url_for("panel.auth.login"))
    response.delete_cookie(SESSION_COOKIE, path="/panel")
    return response


@bp.post("/logout")
@login_required
def logout():
    redis, key = deps().redis, current()["key"]
    pipe = redis.pipeline(transaction=True)
    pipe.delete(key)
    pipe.srem(SESSIONS, key)
    pipe.execute()
    return logged_out(json=False)


def end_everywhere(json):
    ended = end_all_sessions(deps().redis)
    log.warning("panel: every session ended (%d) from %s", ended, client_address())
    return logged_out(json)


@bp.post("/logout-all")
@login_required
def logout_all():
    """"Sair de todos os aparelhos", the button on the health page: every session ends, this one too."""
    return end_everywhere(json=False)


@bp.post("/api/logout-all")
@login_required
def api_logout_all():
    return end_everywhere(json=True)


@bp.get("/api/session")
@login_required
def api_session():
    return jsonify(csrf_token=csrf_token())
