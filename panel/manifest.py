"""/panel/manifest.webmanifest and its icons: the panel installs on a phone's home screen like an app.

No login here: the browser fetches these without the session. The icons are drawn once, in code
(PNG written with zlib), so the panel needs no image files and no imaging library.
"""

import functools
import struct
import zlib

from flask import Blueprint, jsonify, make_response, url_for

bp = Blueprint("manifest", __name__)

SIZES = (192, 512)
GREEN, WHITE = (11, 122, 90), (255, 255, 255)


@bp.get("/manifest.webmanifest")
def manifest():
    response = jsonify(
        name="Painel do Assistente WhatsApp", short_name="Conversas", lang="pt-BR",
        start_url=url_for("panel.inbox.inbox"), scope=url_for("panel.inbox.inbox"), display="standalone",
        background_color="#f4f6f7", theme_color="#0b7a5a",
        icons=[{"src": url_for("panel.manifest.icon", size=size), "sizes": f"{size}x{size}", "type": "image/png",
                "purpose": "any maskable"} for size in SIZES])
    response.mimetype = "application/manifest+json"
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


@bp.get("/icon-<int:size>.png")
def icon(size):
    if size not in SIZES:
        return jsonify(error="Ícone inexistente: use 192 ou 512."), 404
    response = make_response(png(size))
    response.headers["Content-Type"] = "image/png"
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


@functools.lru_cache(maxsize=None)
def png(size):
    """A speech bubble in white on the panel's green, `size` pixels square, as PNG bytes."""
    rows = []
    cx, cy, r = size * 0.5, size * 0.46, size * 0.30
    for y in range(size):
        row = bytearray(b"\x00")  # filter: none
        for x in range(size):
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
            tail = size * 0.30 <= x <= size * 0.44 and cy <= y <= size * 0.80 and (x - size * 0.30) >= (y - cy) * 0.4
            row += bytes(WHITE if inside or tail else GREEN)
        rows.append(bytes(row))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
            + chunk(b"IEND", b""))
