"""The panel at 20,000 chats: how long the inbox's list call takes, and what an idle open page costs per minute.

    python bench/bench_panel.py [--code DIR] [--chats 20000] [--seconds 60]      # about 3 minutes

Real redis-server and `gunicorn webhook:app` (the compose flags) with PANEL_PASSWORD set. CHATS chats
are written as the webhook writes them (buffer.add_message, a message each, 1 % of them paused by a
person, 20 needing a person), and one of them holds a 500-message conversation. Then:

(a) `GET /panel/api/chats` over HTTP, logged in, 20 times each: the first page, a search by name, by
    a number's digits and by a word of the last message, a state filter (paused), needs_person, and
    the page after a cursor. Median and p95 in ms, client side; the first search (cache cold) apart.
(b) A real headless Chromium (Selenium, performance log) keeps the inbox open and idle for SECONDS,
    then the 500-message conversation: the bytes received after the page loaded (Network
    `encodedDataLength`, headers included), per minute, and the polls' statuses.
Targets: <= 100 ms per list call, <= 100 KB/min for the idle inbox.
"""

import argparse
import json
import re
import shutil
import statistics
import time

import requests

import common as c

PASSWORD = "bench-panel-password"
QUERIES = {
    "first page": {},
    "search by name": {"q": "joao"},
    "search by number digits": {"q": "(11) 9 0001-2345"},
    "search by last text": {"q": "cenoura"},
    "state=paused": {"state": "paused"},
    "state=needs_person": {"state": "needs_person"},
}


def seed(r, chats, settings):
    """CHATS chats as the webhook writes them; every 100th paused by a person; 20 needing a person; one long chat."""
    import attention
    import buffer
    import parser
    from conftest import seed_chats, text_message

    cids = seed_chats(r, settings, chats, name=lambda i: "João da Silva" if i == 12_345 else f"Cliente {i}",
                      text=lambda i: "quero um bolo de cenoura" if i % 1000 == 0 else f"oi, tudo bem? pedido {i}",
                      instance=c.INSTANCE)
    pipe = r.pipeline(transaction=False)
    for cid in cids[::100]:
        pipe.set(buffer.keys(cid)["paused"], "human", ex=3600)
    pipe.execute()
    for cid in cids[100:2100:100]:
        attention.flag(r, cid, attention.ASKED)
    number, start = f"55119{chats - 1:08d}", int(time.time()) - 1000
    for k in range(500):  # the newest chat: 500 messages, written as the webhook writes them
        message, = parser.parse_body(text_message(c.sample_text(200, k), f"LONG{k}", number=number,
                                                  instance=c.INSTANCE, timestamp=start + k))
        buffer.add_message(r, message, settings, now=start + k)
    r.delete(buffer.DUE)
    return cids, cids[-1]


def login(base):
    session = requests.Session()
    page = session.get(f"{base}/panel/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert session.post(f"{base}/panel/login", data={"password": PASSWORD, "csrf_token": token},
                        allow_redirects=False).status_code == 302
    return session


def timed(session, url, params, times=20):
    took = []
    for _ in range(times):
        t0 = time.perf_counter()
        response = session.get(url, params=params)
        took.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
    took.sort()
    return took


def idle_bytes(base, path, seconds):
    """Bytes received by a real Chromium after `path` loaded, while it sits open and idle `seconds`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1366,768"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        driver.get(f"{base}/panel/login")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "login-button").click()
        time.sleep(1)
        driver.get(f"{base}{path}")
        time.sleep(2)
        driver.get_log("performance")  # the page's own load: not counted
        time.sleep(seconds)
        received, statuses = 0, {}
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.loadingFinished":
                received += message["params"]["encodedDataLength"]
            elif message["method"] == "Network.responseReceived":
                status = str(message["params"]["response"]["status"])
                statuses[status] = statuses.get(status, 0) + 1
        return received * 60 / seconds, statuses
    finally:
        driver.quit()


def body():
    cli = argparse.ArgumentParser()
    cli.add_argument("--chats", type=int, default=20_000)
    cli.add_argument("--seconds", type=int, default=60)
    args = cli.parse_args()

    import config

    url, r = c.start_redis()
    env = c.bot_env(url, None, None, panel_password=PASSWORD)
    settings = config.load_settings(env)  # the log's cap and expiry, as the webhook has them
    t0 = time.time()
    cids, long_chat = seed(r, args.chats, settings)
    print(f"{args.chats} chats written in {time.time() - t0:.1f} s; Redis keys: {r.dbsize()}", flush=True)
    _, port = c.start_webhook(env)
    base = f"http://127.0.0.1:{port}"
    session = login(base)

    rows, figures = [], {}
    first = session.get(f"{base}/panel/api/chats").json()
    pages = first.get("next") if isinstance(first, dict) else None
    queries = dict(QUERIES)
    if pages:
        queries["page after a cursor"] = {"cursor": pages}
    cold = timed(session, f"{base}/panel/api/chats", {"q": "bolo"}, times=1)[0]
    for label, params in queries.items():
        took = timed(session, f"{base}/panel/api/chats", params)
        answer = session.get(f"{base}/panel/api/chats", params=params).json()
        total = answer.get("total") if isinstance(answer, dict) else len(answer)
        rows.append([label, f"{statistics.median(took):.1f}", f"{c.pct(took, 95):.1f}", total])
        figures[f"panel_list_ms_{re.sub(r'[^a-z]+', '_', label).strip('_')}"] = statistics.median(took)
    rows.append(["first search, cache cold (once)", f"{cold:.1f}", "-", "-"])
    print(f"\nGET /panel/api/chats at {args.chats:,} chats (ms, client side, 20 calls each)")
    print(c.table(rows, ["query", "p50", "p95", "total"]))
    figures["panel_list_ms_worst"] = max(v for k, v in figures.items() if k.startswith("panel_list_ms_"))

    inbox, inbox_statuses = idle_bytes(base, "/panel/", args.seconds)
    thread, thread_statuses = idle_bytes(base, f"/panel/chats/{long_chat}", args.seconds)
    print(f"\nIdle page, {args.seconds} s in a real Chromium (bytes received after the load, per minute)")
    print(c.table([["inbox (/panel/)", f"{inbox / 1024:.1f} KB", json.dumps(inbox_statuses)],
                   ["conversation of 500 messages, with the list beside it", f"{thread / 1024:.1f} KB",
                    json.dumps(thread_statuses)]], ["page", "per minute", "responses by status"]))
    figures.update(panel_idle_inbox_bytes_per_min=inbox, panel_idle_thread_bytes_per_min=thread)
    c.save("panel", {"rows": rows, "inbox_statuses": inbox_statuses, "thread_statuses": thread_statuses,
                     "chats": args.chats}, figures)


if __name__ == "__main__":
    c.main(body, time_limit=420)
