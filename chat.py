"""Talk to the bot in the terminal, without a phone: tune the prompt before connecting a number.

Your lines go through the same path as WhatsApp messages (dedupe, debounce, merge the burst, ask
Gemini with history, split the answer) and what would be sent to WhatsApp is printed instead.
Needs only GEMINI_API_KEY; Redis is an in-memory fakeredis unless --redis-url is given.
Python 3.11 or newer, in a virtual environment (Debian 12 and Ubuntu 24.04 refuse system-wide pip
installs, PEP 668):

    python3 -m venv .venv && .venv/bin/pip install -r requirements-test.txt
    GEMINI_API_KEY=... .venv/bin/python chat.py [--debounce 3] [--instance loja] [--redis-url redis://localhost:6379/0]

Offline, GEMINI_BASE_URL points the real google-genai client at the tests' fake Gemini
(tests/fakes.py), which answers whatever its `responder` returns:

    .venv/bin/python -c 'import sys, time; sys.path.insert(0, "tests"); from fakes import FakeGemini
    g = FakeGemini(api_key="offline", port=8089).start(); g.reply_with("Olá! (resposta de teste)")
    time.sleep(3600)' &
    GEMINI_API_KEY=offline GEMINI_BASE_URL=http://127.0.0.1:8089 .venv/bin/python chat.py --debounce 1
"""

import argparse
import dataclasses
import json
import sys
import threading
import time
import uuid

import redis as redis_lib
import requests
from rq import Queue

import buffer
import worker
from config import SettingsError, load_settings
from parser import Message

CUSTOMER = "5500000000000"


class PrintingEvolution(requests.adapters.BaseAdapter):
    """Stands in for Evolution's REST API: prints each sendText and answers like Evolution (201)."""

    def send(self, request, **kwargs):
        body = json.loads(request.body or b"{}")
        if "/message/sendText/" in request.url:
            print(f"\n🤖 {body['text']}\n", flush=True)
        reply = {"key": {"remoteJid": f"{CUSTOMER}@s.whatsapp.net", "fromMe": True, "id": uuid.uuid4().hex[:20].upper()}}
        response = requests.Response()
        response.status_code = 201
        response._content = json.dumps(reply).encode()
        response.request = request
        return response

    def close(self):
        pass


def main(argv):
    cli = argparse.ArgumentParser(description="Chat with the bot in the terminal")
    cli.add_argument("--debounce", type=float, default=3.0, help="seconds of quiet before the bot answers")
    cli.add_argument("--instance", default="", help="use prompts/<instance>.md if it exists")
    cli.add_argument("--redis-url", default="", help="a real Redis (default: in memory)")
    args = cli.parse_args(argv)

    settings = dataclasses.replace(
        load_settings(require=("GEMINI_API_KEY",)),
        debounce_seconds=args.debounce, evolution_api_url="http://evolution.invalid", evolution_api_key="-",
        send_presence=False, mark_read=False, time_per_char_ms=0, rate_limit_per_hour=0,
    )
    if args.redis_url:
        redis = redis_lib.Redis.from_url(args.redis_url)
    else:
        import fakeredis

        redis = fakeredis.FakeRedis()
    session = requests.Session()
    session.mount("http://evolution.invalid", PrintingEvolution())
    instance = args.instance or settings.evolution_instance or "terminal"
    queue = Queue(worker.QUEUE_NAME, connection=redis)
    ctx = worker.Context(settings, redis, queue, worker.ai_service.make_client(settings), session)

    threading.Thread(target=answer_due_chats, args=(ctx,), daemon=True).start()
    print(f"Chat with the bot ({settings.gemini_model}, debounce {args.debounce:g}s). Ctrl-D to quit.\n")
    for line in sys.stdin:
        if line.strip():
            message = Message(
                event="messages.upsert", instance=instance, chat_id=f"{CUSTOMER}@s.whatsapp.net",
                reply_to=CUSTOMER, message_id=uuid.uuid4().hex, text=line.strip(), push_name="Você",
                from_me=False, is_group=False, timestamp=int(time.time()), kind="text",
            )
            buffer.add_message(redis, message, settings)
    time.sleep(args.debounce + 0.5)  # let a burst typed just before Ctrl-D be answered
    while redis.zcard(buffer.DUE):
        time.sleep(0.2)
    return 0


def answer_due_chats(ctx):
    """What the RQ worker does, in-process: run the chat job for every chat whose time has come."""
    while True:
        for cid in ctx.redis.zrangebyscore(buffer.DUE, "-inf", time.time()):
            worker.process_chat(ctx, cid.decode())
        time.sleep(0.2)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SettingsError as error:  # e.g. no GEMINI_API_KEY: one line, not a traceback
        sys.exit(f"erro de configuração: {error}")
