"""The shop's web panel at /panel: every chat live, take over and answer, tune the persona and the shop's
knowledge, what the bot learned, link the number, the owner's settings, health.

A Flask blueprint on the webhook's app, registered only when PANEL_PASSWORD is set. Each page or API
group is a module with a blueprint of its own (auth, inbox, chats_api, media, quick_replies, persona,
shop_knowledge, learned, connect, owner_settings, health, events, manifest), nested under `panel`; what they
share (the bot's connections, how a chat is shown) is in common.py. Pages are
server-rendered (templates/panel/) and refresh their parts by short polling; the JSON API under
/panel/api serves the pages' buttons and scripts alike, with the same login session.
"""

from flask import Blueprint

from panel import (auth, chats_api, common, connect, events, health, inbox, learned, manifest, media,
                   owner_settings, persona, quick_replies, shop_knowledge)

MODULES = (auth, inbox, chats_api, media, quick_replies, persona, shop_knowledge, learned, connect, owner_settings,
           health, events, manifest)


def make_blueprint(settings, redis, queue, genai=None, http=None):
    """The panel; `genai` and `http` (Gemini client, Evolution session) are made on first use unless given."""
    bp = Blueprint("panel", __name__, url_prefix="/panel", template_folder="../templates",
                   static_folder="../static/panel", static_url_path="/static")
    deps = common.Deps(settings, redis, queue, genai, http)

    @bp.record_once
    def attach(state):
        state.app.extensions["panel"] = deps

    for module in MODULES:
        bp.register_blueprint(module.bp)
    bp.after_request(common.compress)
    auth.configure(bp)
    return bp


def logged_in():
    """Whether this request carries a live panel session (for /health's details outside /panel)."""
    return auth.current() is not None
