"""A message's picture, voice note, video or document, fetched from its channel when the page asks.

Nothing is written to disk: the bytes go from the channel (channels.get_media) to the browser,
behind the login like every panel page. Only what can be shown safely is shown inline (images,
audio, video, PDF, recognised by their first bytes); anything else is a download.
"""

import logging
import re

from flask import Blueprint, jsonify, make_response

import channels
from panel.auth import login_required
from panel.common import chat_meta, deps, resolve

log = logging.getLogger(__name__)

bp = Blueprint("media", __name__)

MESSAGE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF8", "image/gif"),
              (b"OggS", "audio/ogg"), (b"ID3", "audio/mpeg"), (b"%PDF-", "application/pdf"))


def sniff(data):
    """The media type by the file's first bytes, or None when it is nothing the page shows inline."""
    for start, kind in SIGNATURES:
        if data.startswith(start):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "audio/mp4" if data[8:11] == b"M4A" else "video/mp4"
    return None


@bp.get("/media/<pid>/<mid>")
@login_required
def media(pid, mid):
    cid = resolve(pid)
    meta = chat_meta(cid)
    if meta is None or not MESSAGE_ID.fullmatch(mid):
        return jsonify(error="Conversa ou mensagem não encontrada."), 404
    settings = deps().settings
    entry = {"message_id": mid, "chat_id": meta.get("chat_id", ""), "media": {}}
    try:
        data = channels.get_media(deps().evolution(), settings, meta.get("channel", "evolution"),
                                  meta.get("instance", ""), entry, int(settings.max_media_mb * 1024 * 1024))
    except channels.TooLarge:
        return jsonify(error=f"Arquivo maior que {settings.max_media_mb:g} MB: abra no celular."), 413
    except channels.Error as error:
        log.info("panel: media of chat %s not fetched: %s", cid, error)
        return jsonify(error="Não foi possível baixar este arquivo agora. Abra no celular ou tente mais tarde."), 502
    if not data:
        return jsonify(error="Este arquivo não está mais disponível. Abra no celular."), 404
    kind = sniff(data)
    response = make_response(data)
    response.headers["Content-Type"] = kind or "application/octet-stream"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, max-age=3600"  # the browser may keep it; the server never does
    if kind is None or kind == "application/pdf":
        response.headers["Content-Disposition"] = "attachment"
    return response
