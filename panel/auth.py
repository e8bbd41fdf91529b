"""Logging in to the panel: the session cookie, the CSRF token, throttled passwords, and `login_required`."""

import hashlib
import hmac
import logging
import secrets
import time
from datetime import timedelta
from functools import wraps

from flask import Blueprint, jsonify, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

from panel.common import deps

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

FREE_TRIES = 5  # wrong passwords per IP before each next try must wait 1 s, 2 s, 4 s… up to MAX_WAIT
MAX_WAIT = 900
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def secret_key(settings):
    """The session's signing key, derived from PANEL_PASSWORD and WEBHOOK_TOKEN: changing either logs everyone out."""
    return hmac.new(f"panel\n{settings.webhook_token}".encode(), settings.panel_password.encode(),
                    hashlib.sha256).hexdigest()


class Sessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the cookie `Secure` whenever the request came over HTTPS.

    Behind a TLS proxy that is the `X-Forwarded-Proto: https` header; a client forging it only gets
    a cookie its own plain-HTTP requests will not send back.
    """

    def get_cookie_secure(self, app):
        https = request.is_secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        return super().get_cookie_secure(app) or https


def configure(panel_bp, settings):
    """The app's session settings and the headers of every panel response, set when the panel is registered."""

    @panel_bp.record_once
    def session_config(state):
        state.app.config.update(
            SECRET_KEY=state.app.config.get("SECRET_KEY") or secret_key(settings),
            SESSION_COOKIE_NAME="panel_session",
            SESSION_COOKIE_PATH="/panel",
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Strict",
            PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        )
        state.app.session_interface = Sessions()

    @panel_bp.after_request
    def no_framing(response):
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Cache-Control", "no-store")
        return response


def fails_key(ip):
    return f"wa:panel:fails:{ip}"


def csrf_token():
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def csrf_ok(given):
    expected = session.get("csrf")
    return bool(expected and given) and hmac.compare_digest(str(given).encode(), expected.encode())


def login_required(view):
    """Pages redirect to the login, API calls get 401; state-changing calls need the CSRF token (else 403)."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        api = request.path.startswith("/panel/api/")
        if session.get("auth") is not True:
            if api:
                return jsonify(error="not logged in"), 401
            return redirect(url_for("panel.auth.login", next=request.path))
        if request.method in STATE_CHANGING:
            given = request.headers.get("X-CSRF-Token")
            if not api and given is None:
                given = request.form.get("csrf_token")
            if not csrf_ok(given):
                return jsonify(error="missing or wrong CSRF token (header X-CSRF-Token)"), 403
        return view(*args, **kwargs)

    return wrapped


def client_ip():
    return request.remote_addr or "unknown"


def seconds_to_wait(ip, now):
    """How long this IP must wait before its next try: 0 for the first FREE_TRIES wrong passwords."""
    fails, last = deps().redis.hmget(fails_key(ip), "n", "last")
    fails = int(fails or 0)
    if fails < FREE_TRIES:
        return 0
    wait = min(2 ** (fails - FREE_TRIES), MAX_WAIT)
    return max(int(float(last or 0) + wait - now + 0.999), 0)


def note_failure(ip, now):
    pipe = deps().redis.pipeline(transaction=False)
    pipe.hincrby(fails_key(ip), "n", 1)
    pipe.hset(fails_key(ip), "last", repr(now))
    pipe.expire(fails_key(ip), 86400)
    pipe.execute()


@bp.route("/login", methods=["GET", "POST"])
def login():
    settings, redis = deps().settings, deps().redis
    error, status = None, 200
    if request.method == "POST":
        now = time.time()
        wait = seconds_to_wait(client_ip(), now)
        if wait:
            error, status = f"Muitas tentativas erradas. Tente de novo em {wait} s.", 429
        elif not csrf_ok(request.form.get("csrf_token")):
            error, status = "A página expirou. Tente de novo.", 403
        elif hmac.compare_digest(request.form.get("password", "").encode(), settings.panel_password.encode()):
            redis.delete(fails_key(client_ip()))
            target = request.args.get("next", "")
            session.clear()
            session.permanent = True
            session["auth"] = True
            session["csrf"] = secrets.token_urlsafe(32)
            log.info("panel: login from %s", client_ip())
            safe = target.startswith("/panel") and not target.startswith("//")
            return redirect(target if safe else url_for("panel.inbox.inbox"))
        else:
            note_failure(client_ip(), now)
            log.warning("panel: wrong password from %s", client_ip())
            error, status = "Senha incorreta.", 401
    elif session.get("auth") is True:
        return redirect(url_for("panel.inbox.inbox"))
    return render_template("panel/login.html", csrf_token=csrf_token(), error=error), status


@bp.post("/logout")
@login_required
def logout():
    session.clear()
    return redirect(url_for("panel.auth.login"))


@bp.get("/api/session")
@login_required
def api_session():
    return jsonify(csrf_token=csrf_token())
