"""The pages a person reads chats on: the inbox and one conversation, each with a part the page polls."""

from flask import Blueprint

from panel.auth import login_required
from panel.common import chat_list, one_chat, render

bp = Blueprint("inbox", __name__)


@bp.get("")
@bp.get("/")
@login_required
def inbox():
    return render("inbox.html", chats=chat_list(), page="inbox")


@bp.get("/part/inbox")
@login_required
def inbox_part():
    return render("_inbox_rows.html", chats=chat_list())


@bp.get("/chats/<pid>")
@login_required
def chat_page(pid):
    chat = one_chat(pid)
    if chat is None:
        return render("missing.html", page="inbox"), 404
    return render("chat.html", chat=chat, page="inbox")


@bp.get("/part/chats/<pid>")
@login_required
def chat_part(pid):
    chat = one_chat(pid)
    if chat is None:
        return "", 404
    return render("_thread.html", chat=chat)
