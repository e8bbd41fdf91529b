"""The pages a person reads chats on: the inbox and one conversation, each with a part the page polls.

The parts answer 304 to a poll when nothing changed (ETag), so an open, idle inbox costs a few
hundred bytes per poll; the page swaps in only the rows and messages that changed.
"""

from flask import Blueprint, make_response, request, url_for

from panel import search
from panel.auth import login_required
from panel.common import chat_list, conditional, one_chat, render

bp = Blueprint("inbox", __name__)

CHIPS = (("", "Todas"), ("needs_person", "Precisa de você"), ("waiting", "Aguardando o bot"),
         ("answering", "Respondendo"), ("paused", "Pausadas"), ("stopped", "Paradas"), ("idle", "Ociosas"))


def listing():
    """The inbox's page for this request's ?q=&state=&cursor=&limit=, and the query itself; BadQuery when wrong."""
    q, state, cursor, limit = search.parse(request.args)
    return chat_list(q, state, cursor, limit), {"q": q, "state": state}


def inbox_context():
    try:
        found, query = listing()
        error = None
    except search.BadQuery as bad:
        found, query, error = chat_list(), {"q": "", "state": ""}, str(bad)
    part = url_for("panel.inbox.inbox_part", **{k: v for k, v in query.items() if v})
    return {"found": found, "query": query, "chips": CHIPS, "part_url": part, "list_error": error}


@bp.get("")
@bp.get("/")
@login_required
def inbox():
    return render("inbox.html", page="inbox", **inbox_context())


@bp.get("/part/inbox")
@login_required
def inbox_part():
    try:
        found, query = listing()
    except search.BadQuery as bad:
        return make_response(str(bad), 400)
    return conditional(make_response(render("_inbox_rows.html", found=found, query=query)))


@bp.get("/chats/<pid>")
@login_required
def chat_page(pid):
    chat = one_chat(pid)
    if chat is None:
        return render("missing.html", page="inbox"), 404
    return render("chat.html", chat=chat, page="inbox", **inbox_context())


@bp.get("/part/chats/<pid>")
@login_required
def chat_part(pid):
    chat = one_chat(pid)
    if chat is None:
        return make_response("Conversa não encontrada.", 404)
    return conditional(make_response(render("_thread.html", chat=chat)))
