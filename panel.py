"""The shop's web panel at /panel: every chat live, take over and answer, tune the persona, health and numbers.

A Flask blueprint on the webhook's app, registered only when PANEL_PASSWORD is set. Pages are
server-rendered (templates/panel/) and refresh their parts by short polling; the JSON API under
/panel/api serves the pages' buttons and scripts alike, with the same login session.
"""

import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import time
from datetime import timedelta
from functools import wraps
from pathlib import Path

from flask import Blueprint, jsonify, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

import ai_service
import buffer
import channels
import chats
import memory
import sender
import stats
from parser import mask

log = logging.getLogger(__name__)

PROMPT_NAME = re.compile(r"\+?[A-Za-z0-9_-]{1,64}")  # "+5511…": a Twilio number's prompt
CHAT_ID = re.compile(r"[0-9a-f]{20}")
FREE_TRIES = 5  # wrong passwords per IP before each next try must wait 1 s, 2 s, 4 s… up to MAX_WAIT
MAX_WAIT = 900
MAX_REPLY_CHARS = 4096
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
KIND_LABELS = {"image": "imagem", "audio": "áudio", "video": "vídeo", "document": "documento", "sticker": "figurinha",
               "location": "localização", "contact": "contato", "poll": "enquete"}


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


def fails_key(ip):
    return f"wa:panel:fails:{ip}"


def make_blueprint(settings, redis, queue, genai=None, http=None):
    """The panel; `genai` and `http` (Gemini client, Evolution session) are made on first use unless given."""
    bp = Blueprint("panel", __name__, url_prefix="/panel", template_folder="templates",
                   static_folder="static/panel", static_url_path="/static")
    clients = {"genai": genai, "http": http}

    @bp.record_once
    def configure(state):
        state.app.config.update(
            SECRET_KEY=state.app.config.get("SECRET_KEY") or secret_key(settings),
            SESSION_COOKIE_NAME="panel_session",
            SESSION_COOKIE_PATH="/panel",
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Strict",
            PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        )
        state.app.session_interface = Sessions()

    def gemini():
        if clients["genai"] is None:
            clients["genai"] = ai_service.make_client(settings)
        return clients["genai"]

    def evolution():
        if clients["http"] is None:
            clients["http"] = sender.make_session()
        return clients["http"]

    # --- session, CSRF, login -------------------------------------------------------------

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
                return redirect(url_for("panel.login", next=request.path))
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
        fails, last = redis.hmget(fails_key(ip), "n", "last")
        fails = int(fails or 0)
        if fails < FREE_TRIES:
            return 0
        wait = min(2 ** (fails - FREE_TRIES), MAX_WAIT)
        return max(int(float(last or 0) + wait - now + 0.999), 0)

    def note_failure(ip, now):
        pipe = redis.pipeline(transaction=False)
        pipe.hincrby(fails_key(ip), "n", 1)
        pipe.hset(fails_key(ip), "last", repr(now))
        pipe.expire(fails_key(ip), 86400)
        pipe.execute()

    @bp.after_request
    def no_framing(response):
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @bp.route("/login", methods=["GET", "POST"])
    def login():
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
                return redirect(target if safe else url_for("panel.inbox"))
            else:
                note_failure(client_ip(), now)
                log.warning("panel: wrong password from %s", client_ip())
                error, status = "Senha incorreta.", 401
        elif session.get("auth") is True:
            return redirect(url_for("panel.inbox"))
        return render_template("panel/login.html", csrf_token=csrf_token(), error=error), status

    @bp.post("/logout")
    @login_required
    def logout():
        session.clear()
        return redirect(url_for("panel.login"))

    # --- what the pages and the API show ---------------------------------------------------

    def summary(meta, now, reveal=False):
        """One chat as the API and the pages show it."""
        number = meta.get("reply_to", "")
        item = {
            "id": meta["id"], "instance": meta.get("instance", ""), "name": meta.get("name", ""),
            "number_masked": mask(number),
            "last_text": meta.get("last_text", ""), "last_at": int(float(meta.get("last_at") or 0)),
            "last_from": meta.get("last_from", ""),
        }
        item.update(chats.state(redis, meta["id"], now))
        if reveal:
            item["number"] = number
        return item

    def chat_list():
        now = time.time()
        return [summary(meta, now) for meta in memory.chats(redis)]

    def one_chat(cid, reveal=False):
        meta = memory.details(redis, cid) if CHAT_ID.fullmatch(cid) else None
        if meta is None:
            return None
        item = summary(meta, time.time(), reveal)
        item["messages"] = [{"id": m["id"], "from": m["from"], "text": m["text"], "at": m["at"],
                             "kind": m.get("kind", "text")} for m in memory.thread(redis, cid)]
        return item

    def prompt_path(name):
        if name == "system":
            return Path(settings.system_prompt_file)
        return Path(settings.system_prompt_file).parent / f"{name}.md"

    def prompt_names():
        """`system`, every instance seen, and every prompts/<name>.md there is."""
        names = {m.get("instance") for m in memory.chats(redis) if m.get("instance")}
        names |= {name.decode() for name in redis.hkeys(stats.INSTANCES)}
        folder = prompt_path("system").parent
        if folder.is_dir():
            names |= {p.stem for p in folder.glob("*.md")}
        names.discard(prompt_path("system").stem)
        names.discard("system")
        return ["system", *sorted(n for n in names if PROMPT_NAME.fullmatch(n))]

    def queue_name():
        return queue.name if queue is not None else "whatsapp"

    def json_body():
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else None

    def render(template, **context):
        return render_template(f"panel/{template}", csrf_token=csrf_token(), kinds=KIND_LABELS, now=time.time(),
                               **context)

    # --- pages -----------------------------------------------------------------------------

    @bp.get("")
    @bp.get("/")
    @login_required
    def inbox():
        return render("inbox.html", chats=chat_list(), page="inbox")

    @bp.get("/part/inbox")
    @login_required
    def inbox_part():
        return render("_inbox_rows.html", chats=chat_list())

    @bp.get("/chats/<cid>")
    @login_required
    def chat_page(cid):
        chat = one_chat(cid)
        if chat is None:
            return render("missing.html", page="inbox"), 404
        return render("chat.html", chat=chat, page="inbox")

    @bp.get("/part/chats/<cid>")
    @login_required
    def chat_part(cid):
        chat = one_chat(cid)
        if chat is None:
            return "", 404
        return render("_thread.html", chat=chat)

    @bp.get("/persona")
    @login_required
    def persona_page():
        return render("persona.html", names=prompt_names(), page="persona")

    @bp.get("/health")
    @login_required
    def health_page():
        return render("health.html", days=stats.daily(redis), health=stats.health(redis, lambda: buffer.queue_depth(redis, queue_name())),
                      page="health")

    # --- JSON API ---------------------------------------------------------------------------

    @bp.get("/api/session")
    @login_required
    def api_session():
        return jsonify(csrf_token=csrf_token())

    @bp.get("/api/chats")
    @login_required
    def api_chats():
        return jsonify(chat_list())

    @bp.get("/api/chats/<cid>")
    @login_required
    def api_chat(cid):
        chat = one_chat(cid, reveal=request.args.get("reveal") in ("1", "true"))
        return jsonify(chat) if chat else (jsonify(error="no such chat"), 404)

    def act(cid, action):
        if not CHAT_ID.fullmatch(cid) or memory.details(redis, cid) is None:
            return jsonify(error="no such chat"), 404
        result = action()
        log.info("panel: chat %s: %s", cid, result)
        return jsonify(result=result, **chats.state(redis, cid))

    @bp.post("/api/chats/<cid>/pause")
    @login_required
    def api_pause(cid):
        return act(cid, lambda: take_over(cid))

    @bp.post("/api/chats/<cid>/resume")
    @login_required
    def api_resume(cid):
        return act(cid, lambda: chats.hand_back(redis, cid, settings))

    @bp.post("/api/chats/<cid>/stop")
    @login_required
    def api_stop(cid):
        return act(cid, lambda: chats.stop(redis, cid, settings))

    @bp.post("/api/chats/<cid>/forget")
    @login_required
    def api_forget(cid):
        if not CHAT_ID.fullmatch(cid) or memory.details(redis, cid) is None:
            return jsonify(error="no such chat"), 404
        erased = chats.forget(redis, cid)
        log.info("panel: chat %s erased (%d keys)", cid, erased)
        return jsonify(result="forgotten", erased=erased)

    def take_over(cid):
        """Pause the bot; a handoff is counted only when the bot was answering this chat until now."""
        before = chats.state(redis, cid)["state"]
        result = chats.take_over(redis, cid, settings)
        if before not in ("paused", "stopped"):
            pipe = redis.pipeline(transaction=False)
            stats.count(pipe, "handoffs")
            pipe.execute()
        return result

    @bp.post("/api/chats/<cid>/reply")
    @login_required
    def api_reply(cid):
        """Answer as a person: pause the bot first, send through the chat's own instance and channel, log it as "human"."""
        body = json_body()
        text = body.get("text") if body else None
        if not isinstance(text, str) or not text.strip():
            return jsonify(error='send JSON {"text": "..."} with a non-empty text'), 400
        if len(text) > MAX_REPLY_CHARS:
            return jsonify(error=f"text longer than {MAX_REPLY_CHARS} characters"), 400
        meta = memory.details(redis, cid) if CHAT_ID.fullmatch(cid) else None
        if not meta or not meta.get("reply_to"):
            return jsonify(error="no such chat"), 404
        take_over(cid)
        try:
            message_id, at = channels.send_text(evolution(), settings, meta.get("channel", "evolution"),
                                                meta.get("instance", ""), meta["reply_to"], text.strip())
        except channels.Error as error:
            log.warning("panel: reply to chat %s failed: %s", cid, error)
            return jsonify(error=str(error)), 502
        message_id = message_id or f"panel-{secrets.token_hex(8)}"
        memory.record_human(redis, cid, message_id, text.strip(), at, settings)
        log.info("panel: a person answered chat %s", cid)  # never a chat id beside a (masked) number
        return jsonify(result="sent", id=message_id, **chats.state(redis, cid))

    @bp.get("/api/prompts/<name>")
    @login_required
    def api_prompt(name):
        if not PROMPT_NAME.fullmatch(name):
            return jsonify(error="prompt names are letters, digits, - and _"), 400
        path = prompt_path(name)
        exists = path.is_file()
        return jsonify(name=name, text=path.read_text(encoding="utf-8") if exists else "", exists=exists,
                       overridden=name == "system" and bool(settings.system_prompt.strip()))

    @bp.put("/api/prompts/<name>")
    @login_required
    def api_save_prompt(name):
        """Write prompts/<name>.md; the next reply reads it (no restart). An empty instance prompt is removed."""
        if not PROMPT_NAME.fullmatch(name):
            return jsonify(error="prompt names are letters, digits, - and _"), 400
        body = json_body()
        text = body.get("text") if body else None
        if not isinstance(text, str) or len(text) > 100_000:
            return jsonify(error='send JSON {"text": "..."} (at most 100000 characters)'), 400
        path = prompt_path(name)
        if not text.strip():
            if name == "system":
                return jsonify(error="the system prompt cannot be empty"), 400
            path.unlink(missing_ok=True)
            return jsonify(name=name, exists=False)
        tmp = None
        try:
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False) as tmp:
                tmp.write(text.strip() + "\n")
            os.replace(tmp.name, path)  # a reply reading it meanwhile sees the old or the new text, never half
        except OSError as error:  # e.g. prompts/ not writable by the container's user (README "Panel")
            if tmp is not None:
                Path(tmp.name).unlink(missing_ok=True)
            log.error("panel: cannot save prompt %s: %s", name, error)
            return jsonify(error=f"cannot write {path.name}: {error.strerror or error}"), 500
        log.info("panel: prompt %s saved (%d chars)", name, len(text))
        return jsonify(name=name, exists=True)

    @bp.post("/api/try")
    @login_required
    def api_try():
        """What the bot would answer, as chat.py does (no history, split parts), sending nothing to WhatsApp."""
        import worker  # split_reply: the same split as real replies

        body = json_body()
        text = body.get("text") if body else None
        instance = body.get("instance") or "" if body else ""
        if not isinstance(text, str) or not text.strip() or not isinstance(instance, str):
            return jsonify(error='send JSON {"instance": "...", "text": "..."}'), 400
        if instance and not PROMPT_NAME.fullmatch(instance):
            return jsonify(error="instance names are letters, digits, - and _"), 400
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            prompt = ai_service.load_system_prompt(settings, instance)
        try:
            answer = ai_service.generate_reply(gemini(), settings, [], text[: settings.max_input_chars], prompt)
        except ai_service.Handoff as handoff:  # Gemini would hand this chat to a person
            return jsonify(parts=[settings.handoff_message], handoff=handoff.reason)
        except ai_service.ReplyError as error:
            return jsonify(error=error.reason), 502
        return jsonify(parts=worker.split_reply(answer, settings))

    @bp.get("/api/stats")
    @login_required
    def api_stats():
        return jsonify(days=stats.daily(redis), health=stats.health(redis, lambda: buffer.queue_depth(redis, queue_name())))

    return bp
