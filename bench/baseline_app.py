"""The webhook benchmark's baseline: a bare Flask app that parses the JSON and does one Redis SET.

Served by the same gunicorn flags as `webhook:app` (bench/common.py GUNICORN_FLAGS), so the ratio
bot / baseline is the cost of the bot's own work (token check, parsing, dedupe, buffer, logging,
scheduling) over the least any Flask + Redis webhook must do.

    cd bench && REDIS_URL=redis://127.0.0.1:6379/0 gunicorn --workers 2 --threads 4 baseline_app:app
"""

import json
import os

import redis
from flask import Flask, jsonify, request

app = Flask(__name__)
r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


@app.post("/webhook")
def receive():
    body = json.loads(request.get_data())
    message_id = body["data"]["key"]["id"]
    r.set(f"base:seen:{message_id}", "1", nx=True, ex=86400)
    return jsonify(status="ok")


@app.get("/health")
def health():
    return jsonify(status="ok")
