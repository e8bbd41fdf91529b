"""The panel in a real headless Chromium (Selenium) against real processes: redis-server, gunicorn, the worker.

The owner logs in, sees a chat appear while the fake Evolution delivers a burst, opens it, takes
over, answers as a person (the fake Evolution receives it; the bot stays quiet), edits the persona
and tries it, hands back, and the next Gemini request carries the new persona. The owner also writes
the shop's knowledge and tries it, and approves or rejects what the bot learned. Screenshots go to
docs/screenshots/ for the README.
"""

import json
import shutil
import time

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import requests

import buffer
import chat_ids
import learn
import stats
from config import load_settings
from conftest import CUSTOMER, PANEL_KEY, ROOT, seed_chats, text_message, wait_until

PASSWORD = "senha-do-painel-teste"
SHOTS = ROOT / "docs" / "screenshots"
DEBOUNCE = 3
WAIT = 30  # generous: the machine is shared
REF = buffer.chat_ref("shop", f"{CUSTOMER}@s.whatsapp.net")  # as Redis keys it
CID = chat_ids.public(PANEL_KEY.encode(), REF)  # as URLs show it


@pytest.fixture
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromium-driver are not installed: run `bash .ci/run`, which installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations show in the console
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=430,1000", "--lang=pt-BR", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def until(driver, predicate, message):
    """Wait for `predicate(driver)`; stale elements (a part just re-rendered by polling) mean "not yet"."""

    def check(d):
        try:
            return predicate(d)
        except StaleElementReferenceException:
            return False

    return WebDriverWait(driver, WAIT, poll_frequency=0.2).until(check, message)


def texts(driver, css):
    return [el.text for el in driver.find_elements(By.CSS_SELECTOR, css)]


def state(driver):
    badges = driver.find_elements(By.CSS_SELECTOR, "#thread .now [data-state]")
    return badges[0].get_attribute("data-state") if badges else None


def shot(driver, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, max(min(height + 140, 2200), 700))
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_owner_runs_a_conversation_from_the_panel(start_stack, gemini, evolution, browser, tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    shutil.copy(ROOT / "prompts" / "system.md", prompts / "system.md")
    stack = start_stack(PANEL_PASSWORD=PASSWORD, DEBOUNCE_SECONDS=DEBOUNCE, SYSTEM_PROMPT_FILE=prompts / "system.md",
                        HANDOFF_PAUSE_MINUTES=60)
    redis = stack.redis.client()
    redis.hset(stats.INSTANCES, "shop", json.dumps({"state": "open", "at": time.time()}))
    gemini.reply_with("Oi! Temos bolo de cenoura com chocolate, sim.\n\nO inteiro sai por R$ 45. Quer encomendar?")

    # Log in: the panel sends a stranger to the login page first.
    browser.get(f"{stack.url}/panel/")
    until(browser, lambda d: d.find_element(By.ID, "password"), "the login form")
    assert "/panel/login" in browser.current_url
    browser.find_element(By.ID, "password").send_keys("errada")
    browser.find_element(By.ID, "login-button").click()
    until(browser, lambda d: "Senha incorreta" in d.find_element(By.ID, "login-error").text, "the wrong-password message")
    shot(browser, "login")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-button").click()
    until(browser, lambda d: d.find_elements(By.ID, "no-chats"), "the empty inbox")

    # A burst arrives; the chat shows up in the open inbox without a reload.
    now = int(time.time())
    stack.post(text_message("Oi, boa tarde!", "BR1", timestamp=now - 1))
    stack.post(text_message("vocês têm bolo de cenoura?", "BR2", timestamp=now))
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".chats a.chat"), "the chat to appear in the inbox")
    row = browser.find_element(By.CSS_SELECTOR, ".chats a.chat")
    assert "vocês têm bolo de cenoura?" in row.text
    assert "5511*****4321" in row.text and CUSTOMER not in browser.page_source
    evolution.wait_for(2, timeout=WAIT)  # the bot's answer, in two parts
    until(browser, lambda d: "Bot:" in d.find_element(By.CSS_SELECTOR, ".chats a.chat").text, "the reply in the inbox")

    # Open it: the whole thread, who said what.
    browser.find_element(By.CSS_SELECTOR, ".chats a.chat").click()
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#messages .from-bot")) == 2, "the bot's two parts")
    assert texts(browser, "#messages .msg .text") == [
        "Oi, boa tarde!", "vocês têm bolo de cenoura?", "Oi! Temos bolo de cenoura com chocolate, sim.",
        "O inteiro sai por R$ 45. Quer encomendar?"]
    browser.find_element(By.ID, "reveal").click()
    until(browser, lambda d: d.find_element(By.ID, "number").text == CUSTOMER, "the revealed number")

    # Take over, then answer as a person: Evolution sends it, the bot stays quiet.
    browser.find_element(By.ID, "take-over").click()
    until(browser, lambda d: state(d) == "paused", "the chat to be paused")
    browser.find_element(By.ID, "reply-text").send_keys("Oi! Aqui é a Ana. Faço o bolo para sábado, pode ser?")
    browser.find_element(By.ID, "reply-send").click()
    evolution.wait_for(3, timeout=WAIT)
    assert evolution.sent_texts()[-1] == ("shop", CUSTOMER, "Oi! Aqui é a Ana. Faço o bolo para sábado, pode ser?")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#messages .from-human"), "the person's answer in the thread")
    gemini_calls = len(gemini.requests)
    stack.post(text_message("pode sim, obrigada!", "BR3"))
    until(browser, lambda d: "pode sim, obrigada!" in d.find_element(By.ID, "messages").text, "the customer's answer")
    time.sleep(DEBOUNCE + 2)  # a bot answer would come within this; absence cannot be waited for
    assert len(gemini.requests) == gemini_calls and len(evolution.sent_texts()) == 3
    until(browser, lambda d: state(d) == "needs_person", "the customer waiting for the person")  # wrote while paused
    assert "escreveu enquanto pausado" in browser.find_element(By.ID, "now").text
    browser.execute_script("window.scrollTo(0, 0)")
    shot(browser, "conversation")

    # Another customer writes meanwhile, on another number: the inbox shows each chat's state.
    gemini.hold()
    other = text_message("Bom dia! Vocês entregam em Pinheiros?", "OT1", number="5521988887777", instance="loja2")
    other["data"]["pushName"] = "Marina"
    stack.post(other)
    browser.find_element(By.ID, "nav-inbox").click()
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".chats a.chat")) == 2, "two chats in the inbox")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '.chats [data-state="answering"]'), "the other chat answering")
    assert browser.find_element(By.CSS_SELECTOR, f'a.chat[data-cid="{CID}"] .state').get_attribute("data-state") == \
        "needs_person"
    assert browser.find_element(By.CSS_SELECTOR, ".chats li").get_attribute("data-cid") == CID  # pinned first
    assert browser.title.startswith("(1) Conversas")
    shot(browser, "inbox")
    gemini.release()
    evolution.wait_for(5, timeout=WAIT)  # the other customer's answer, in two parts
    assert evolution.sent_texts()[-1][:2] == ("loja2", "5521988887777")

    # Edit the persona and try it, without sending anything to WhatsApp.
    browser.find_element(By.ID, "nav-persona").click()
    area = until(browser, lambda d: (el := d.find_element(By.ID, "persona-text")).get_attribute("value") and el,
                 "the system prompt in the editor")
    persona = "Você é a Bia, atendente da Doceria Teste. Responda em português, curto e simpático."
    area.clear()
    area.send_keys(persona)
    browser.find_element(By.ID, "persona-save").click()
    until(browser, lambda d: "Salvo" in d.find_element(By.ID, "persona-status").text, "the saved message")
    assert (prompts / "system.md").read_text().strip() == persona
    gemini.reply_with("Abrimos sim!\n\nSábado das 9h às 13h.")
    browser.find_element(By.ID, "try-send").click()
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#try-parts li")) == 2, "the try-it answer")
    assert gemini.system_text() == persona
    assert len(evolution.sent_texts()) == 5
    shot(browser, "persona")

    # Hand back: the next customer message is answered, and Gemini is asked with the new persona.
    browser.get(f"{stack.url}/panel/")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'a.chat[data-cid="{CID}"]'), "the inbox")
    browser.find_element(By.CSS_SELECTOR, f'a.chat[data-cid="{CID}"]').click()
    until(browser, lambda d: d.find_element(By.ID, "hand-back"), "the conversation")
    browser.find_element(By.ID, "hand-back").click()
    until(browser, lambda d: state(d) == "idle", "the bot to be back")
    gemini.reply_with("Combinado! Até sábado.")
    calls = len(gemini.requests)
    stack.post(text_message("então fechado, até sábado", "BR4"))
    evolution.wait_for(6, timeout=WAIT)
    assert len(gemini.requests) == calls + 1 and gemini.system_text() == persona
    until(browser, lambda d: "Combinado! Até sábado." in d.find_element(By.ID, "messages").text, "the bot's new reply")

    # Health and numbers.
    wait_until(lambda: redis.hget(stats.TOTAL, "replies") == b"3", timeout=WAIT, message="three replies counted")
    browser.find_element(By.ID, "nav-health").click()
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".charts svg"), "the charts")
    assert "conectado" in browser.find_element(By.ID, "health").text
    shot(browser, "health")

    browser.find_element(By.ID, "logout").click()
    until(browser, lambda d: d.find_elements(By.ID, "password"), "the login page after logout")

    # Log in again, then leave every device: a copy of the cookie no longer reads anything.
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-button").click()
    until(browser, lambda d: d.find_elements(By.ID, "nav-health"), "the inbox")
    browser.find_element(By.ID, "nav-health").click()
    until(browser, lambda d: d.find_elements(By.ID, "logout-all"), "the health page's button")
    copied = {"panel_session": browser.get_cookie("panel_session")["value"]}
    assert requests.get(f"{stack.url}/panel/api/chats", cookies=copied, timeout=10).status_code == 200
    browser.find_element(By.ID, "logout-all").click()
    until(browser, lambda d: d.find_elements(By.ID, "password"), "the login page after leaving every device")
    assert requests.get(f"{stack.url}/panel/api/chats", cookies=copied, timeout=10).status_code == 401

    # The pages worked under `Content-Security-Policy: default-src 'self'`: nothing inline was refused.
    refused = [entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]
    assert refused == []


def test_owner_links_a_number_and_pauses_the_bot_from_the_panel(start_stack, gemini, evolution, browser):
    """Conectar WhatsApp: create a number, the QR code, linked once the phone scans it. Configurações: pause the
    bot for everyone (nobody answered, the chat still shown), a wrong value refused in Portuguese, resume."""
    stack = start_stack(PANEL_PASSWORD=PASSWORD, DEBOUNCE_SECONDS=DEBOUNCE)
    gemini.reply_with("Oi! Estamos abertos até as 18h.")
    browser.get(f"{stack.url}/panel/login")
    until(browser, lambda d: d.find_element(By.ID, "password"), "the login form")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-button").click()
    until(browser, lambda d: d.find_elements(By.ID, "nav-connect"), "the panel")

    # Link a new number: create it, scan the QR code, the page says it is linked.
    browser.find_element(By.ID, "nav-connect").click()
    until(browser, lambda d: "conectado" in d.find_element(By.CSS_SELECTOR, '#instances li[data-name="shop"]').text,
          "the linked numbers")
    name = browser.find_element(By.ID, "instance-name")
    name.clear()
    name.send_keys("loja-centro")
    browser.find_element(By.ID, "create").click()
    until(browser, lambda d: (d.find_element(By.ID, "qr").get_attribute("src") or "").startswith("data:image/png;base64,")
          and d.find_element(By.ID, "qr").is_displayed(), "the QR code")
    assert [c["json"]["instanceName"] for c in evolution.calls("createInstance")] == ["loja-centro"]
    qr = browser.find_element(By.ID, "qr")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", qr) > 0  # CSP lets it in
    shot(browser, "connect")
    evolution.scan_qr("loja-centro")
    until(browser, lambda d: "Conectado!" in d.find_element(By.ID, "qr-status").text, "the number linked")
    until(browser, lambda d: "conectado" in d.find_element(By.CSS_SELECTOR, '#instances li[data-name="loja-centro"]').text,
          "the new number in the list")

    # Pause the bot for everyone: a customer writes, nobody answers, the panel shows the message.
    browser.find_element(By.ID, "nav-settings").click()
    until(browser, lambda d: d.find_element(By.ID, "settings-form"), "the settings page")
    browser.find_element(By.ID, "bot_paused").click()
    owner_number = browser.find_element(By.ID, "owner_number")
    owner_number.send_keys("+55 11 99999-0077")
    hours = browser.find_element(By.ID, "business_hours")
    hours.send_keys("seg-sex 8h-18h")
    browser.find_element(By.ID, "settings-save").click()
    until(browser, lambda d: "BUSINESS_HOURS" in d.find_element(By.ID, "settings-status").text, "the refusal")
    assert "Exemplo: BUSINESS_HOURS=seg-sex 08:00-18:00" in browser.find_element(By.ID, "settings-status").text
    assert "invalid" in hours.get_attribute("class")
    hours.clear()
    hours.send_keys("seg-sex 08:00-18:00, sab 08:00-12:00")
    browser.find_element(By.ID, "settings-save").click()
    until(browser, lambda d: "Salvo" in d.find_element(By.ID, "settings-status").text, "the saved settings")
    browser.execute_script("window.scrollTo(0, 0)")
    shot(browser, "settings")

    stack.post(text_message("oi, vocês abrem hoje?", "PAUSED1"))
    time.sleep(DEBOUNCE + 2)  # a reply would be out by now; absence cannot be waited for
    assert evolution.sent_texts() == [] and gemini.requests == []
    browser.find_element(By.ID, "nav-inbox").click()
    until(browser, lambda d: "vocês abrem hoje?" in d.find_element(By.CSS_SELECTOR, ".chats a.chat").text,
          "the message in the inbox")

    # Resume: the next message is answered.
    browser.find_element(By.ID, "nav-settings").click()
    until(browser, lambda d: d.find_element(By.ID, "bot_paused").is_selected(), "the pause kept")
    browser.find_element(By.ID, "bot_paused").click()
    browser.find_element(By.ID, "settings-save").click()
    until(browser, lambda d: "Salvo" in d.find_element(By.ID, "settings-status").text, "the bot resumed")
    stack.post(text_message("alô?", "PAUSED2"))
    evolution.wait_for(1, timeout=WAIT)
    assert evolution.sent_texts() == [("shop", CUSTOMER, "Oi! Estamos abertos até as 18h.")]
    refused = [entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]
    assert refused == []  # Conectar WhatsApp and Configurações work under the panel's CSP too


BAKERY = "## Pães\n- Pão francês: R$ 0,90 a unidade\n- Pão de queijo: R$ 4,50\n\n## Horário\n- Todos os dias das 6h às 20h"


def test_owner_writes_the_knowledge_and_approves_what_the_bot_learned(start_stack, gemini, browser, tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    shutil.copy(ROOT / "prompts" / "system.md", prompts / "system.md")
    stack = start_stack(PANEL_PASSWORD=PASSWORD, SYSTEM_PROMPT_FILE=prompts / "system.md")
    settings = load_settings({"SYSTEM_PROMPT_FILE": str(prompts / "system.md")}, require=())
    redis = stack.redis.client()
    learned = learn.suggest(redis, settings, "shop", REF, "Vocês fazem bolo de aniversário sob encomenda?",
                            "Sim, com 3 dias de antecedência, a partir de R$ 80.")
    unwanted = learn.suggest(redis, settings, "shop", REF, "Vocês abrem no feriado?", "Nesse feriado não.")

    browser.get(f"{stack.url}/panel/login")
    until(browser, lambda d: d.find_element(By.ID, "password"), "the login form")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-button").click()
    until(browser, lambda d: d.find_elements(By.ID, "nav-knowledge"), "the panel")

    # The knowledge: written, saved, tried (the draft reaches Gemini after the persona).
    browser.find_element(By.ID, "nav-knowledge").click()
    area = until(browser, lambda d: d.find_element(By.ID, "knowledge-text"), "the knowledge editor")
    until(browser, lambda d: "caracteres" in d.find_element(By.ID, "knowledge-size").text, "the knowledge loaded")
    area.send_keys(BAKERY)
    browser.find_element(By.ID, "knowledge-save").click()
    until(browser, lambda d: "Salvo" in d.find_element(By.ID, "knowledge-status").text, "the saved message")
    assert (prompts / "knowledge.md").read_text() == BAKERY + "\n"
    gemini.reply_with("O pão francês sai por R$ 0,90 a unidade.\n\nQuer reservar?")
    browser.find_element(By.ID, "knowledge-try-send").click()
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#knowledge-try-parts li")) == 2, "the try-it answer")
    assert gemini.system_text().endswith("## O que a loja sabe\n\n" + BAKERY)
    shot(browser, "knowledge")

    # What the bot learned: one approved with an edited answer, one rejected.
    browser.find_element(By.ID, "nav-learned").click()
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".suggestion")) == 2, "two suggestions")
    shot(browser, "learned")
    item = browser.find_element(By.CSS_SELECTOR, f'.suggestion[data-id="{learned["id"]}"]')
    answer = item.find_element(By.CSS_SELECTOR, "textarea.answer")
    answer.clear()
    answer.send_keys("Sim, sob encomenda com 3 dias de antecedência, a partir de R$ 80 (1 kg).")
    item.find_element(By.CSS_SELECTOR, '[data-decision="approve"]').click()
    until(browser, lambda d: "Aprovada" in item.find_element(By.CSS_SELECTOR, ".status").text, "the approval")
    other = browser.find_element(By.CSS_SELECTOR, f'.suggestion[data-id="{unwanted["id"]}"]')
    other.find_element(By.CSS_SELECTOR, '[data-decision="reject"]').click()
    until(browser, lambda d: "Rejeitada" in other.find_element(By.CSS_SELECTOR, ".status").text, "the rejection")
    assert (prompts / "knowledge.md").read_text() == BAKERY + "\n" + learn.qa_line(
        "Vocês fazem bolo de aniversário sob encomenda?",
        "Sim, sob encomenda com 3 dias de antecedência, a partir de R$ 80 (1 kg).") + "\n"
    assert learn.suggestions(redis) == []
    assert "feriado" not in (prompts / "knowledge.md").read_text()
    refused = [entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]
    assert refused == []  # the knowledge and "O bot aprendeu" pages work under the panel's CSP


# --- the owner's day (issue 21), at a phone's and a laptop's size ----------------------------------------------------

CONTRAST = """
// WCAG 2 contrast of every visible text against the background it is drawn on; the failures, as text.
const lum = (c) => { const [r, g, b] = c.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                     return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
const background = (el) => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
                             if (c.length === 3 || c[3] > 0.5) return c.slice(0, 3); } return [255, 255, 255]; };
const bad = [];
document.querySelectorAll("body *").forEach((el) => {
  const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own || !el.getClientRects().length || el.closest("[disabled], .sr-only")) return;
  const style = getComputedStyle(el);
  if (style.visibility === "hidden") return;
  const a = lum(rgb(style.color).slice(0, 3)), b = lum(background(el));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  const large = parseFloat(style.fontSize) >= 24 || (parseFloat(style.fontSize) >= 18.6 && Number(style.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) bad.push(`${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
});
return bad;
"""

SIZES = {"phone": (390, 844), "laptop": (1366, 768)}


@pytest.mark.parametrize("size", list(SIZES))
def test_owners_day_needs_person_search_quick_replies_suggest_media(size, start_stack, gemini, evolution, browser,
                                                                   make_settings):
    width, height = SIZES[size]
    stack = start_stack(PANEL_PASSWORD=PASSWORD, DEBOUNCE_SECONDS=1, HANDOFF_PAUSE_MINUTES=60)
    redis = stack.redis.client()
    settings = make_settings(PANEL_PASSWORD=PASSWORD)
    seed_chats(redis, settings, 60, name=lambda i: "Mariazinhadaconfeitariadobairrodesaojoaquimdasflores" if i == 59
               else f"Cliente antigo {i}", text=lambda i: f"pedido número {i}")  # older chats, the newest a long name
    redis.set("wa:panel:quick_replies", json.dumps([{"shortcut": "pix", "text": "Nossa chave Pix é o CNPJ da loja."}]))

    browser.set_window_size(width, height)
    browser.get(f"{stack.url}/panel/login")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-button").click()
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chats li[data-cid]")) == 50, "the first 50 chats")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width  # long names wrap
    browser.execute_script("""window.__notes = [];
      window.Notification = function (title, options) { window.__notes.push(title + " | " + options.body); };
      window.Notification.permission = "granted";""")

    # "mais antigas": the next page joins the list
    browser.find_element(By.ID, "more").click()
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chats li[data-cid]")) == 60, "all 60 chats")
    assert not browser.find_elements(By.ID, "more")

    # A customer asks for a person: pinned first, in the title, a notification, said aloud
    stack.post(text_message("quero falar com uma pessoa, por favor", "DAY1"))
    until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#chats li").get_attribute("data-cid") == CID,
          "the chat pinned first")
    row = browser.find_element(By.CSS_SELECTOR, "#chats li")
    assert row.get_attribute("data-state") == "needs_person" and "pediu uma pessoa" in row.text
    until(browser, lambda d: d.title.startswith("(1) Conversas"), "the count in the title")
    until(browser, lambda d: d.execute_script("return window.__notes.length") == 1, "a browser notification")
    assert "pediu uma pessoa" in browser.execute_script("return window.__notes[0]")
    until(browser, lambda d: "Precisa de você" in d.find_element(By.ID, "announce").text, "said through aria-live")
    browser.execute_script("window.scrollTo(0, 0)")
    shot(browser, f"inbox-needs-{size}")

    # Search and filter
    browser.set_window_size(width, height)
    search = browser.find_element(By.ID, "q")
    search.send_keys("mariazinha")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chats li[data-cid]")) == 1, "one chat found")
    assert browser.switch_to.active_element == search  # typing kept its place
    search.clear()
    search.send_keys(" ")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chats li[data-cid]")) > 1, "the list back")
    browser.find_element(By.CSS_SELECTOR, '.chips a[data-state="needs_person"]').click()
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chats li[data-cid]")) == 1, "only who needs you")

    # The conversation: the reason, buttons that fit, the customer's voice note and picture
    voice = b"OggS" + bytes(100)
    evolution.add_media("DAY2", "audio/ogg; codecs=opus", voice)
    audio = text_message("", "DAY2")
    audio["data"]["message"] = {"audioMessage": {"mimetype": "audio/ogg; codecs=opus", "seconds": 3, "ptt": True}}
    audio["data"]["messageType"] = "audioMessage"
    stack.post(audio)
    from panel.manifest import png

    evolution.add_media("DAY3", "image/png", png(192), "imageMessage")
    image = text_message("", "DAY3")
    image["data"]["message"] = {"imageMessage": {"mimetype": "image/png", "caption": "esse aqui"}}
    image["data"]["messageType"] = "imageMessage"
    stack.post(image)
    browser.find_element(By.CSS_SELECTOR, f'a.chat[data-cid="{CID}"]').click()
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#messages img.thumb"), "the picture's thumbnail")
    until(browser, lambda d: d.execute_script(
        "const i = document.querySelector('#messages img.thumb'); return i.complete && i.naturalWidth"), "the picture")
    source = browser.find_element(By.CSS_SELECTOR, "#messages audio").get_attribute("src")
    assert browser.execute_script("return fetch(arguments[0]).then((r) => r.status)", source) == 200
    assert "pediu uma pessoa" in browser.find_element(By.ID, "now").text
    assert browser.find_elements(By.ID, "hand-back") and not browser.find_elements(By.ID, "take-over")
    side = browser.find_element(By.CSS_SELECTOR, ".split .side")
    if size == "laptop":  # the list beside the conversation
        conversation = browser.find_element(By.CSS_SELECTOR, ".conversation")
        assert side.is_displayed() and side.rect["x"] + side.rect["width"] <= conversation.rect["x"]
    else:
        assert not side.is_displayed()
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width

    # Suggest, then a quick reply with "/" and Enter: sent, and nobody is waiting any more
    gemini.reply_with("Oi! Já vou te atender, um minuto.")
    browser.find_element(By.ID, "suggest").click()
    box = browser.find_element(By.ID, "reply-text")
    until(browser, lambda d: box.get_attribute("value") == "Oi! Já vou te atender, um minuto.", "the suggestion")
    sent = len(evolution.sent_texts())
    box.clear()
    box.send_keys("/pi")
    until(browser, lambda d: d.find_element(By.ID, "quick-list").is_displayed(), "the quick replies")
    assert "/pix" in browser.find_element(By.ID, "quick-list").text
    box.send_keys("\n")
    assert box.get_attribute("value") == "Nossa chave Pix é o CNPJ da loja."
    box.send_keys("\n")  # Enter sends
    evolution.wait_for(lambda: len(evolution.sent_texts()) == sent + 1, timeout=WAIT)
    assert evolution.sent_texts()[-1] == ("shop", CUSTOMER, "Nossa chave Pix é o CNPJ da loja.")
    until(browser, lambda d: state(d) == "paused", "answered: nobody waiting")
    assert browser.switch_to.active_element == box  # the refresh kept the focus in the reply box
    browser.execute_script("window.scrollTo(0, 0)")
    shot(browser, f"conversation-{size}")
    assert browser.execute_script(CONTRAST) == []

    # Dark, following the system's theme, with the same contrast
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    browser.get(f"{stack.url}/panel/")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chats li[data-cid]"), "the inbox")
    assert browser.execute_script("return getComputedStyle(document.body).backgroundColor") == "rgb(16, 21, 23)"
    assert browser.execute_script(CONTRAST) == []
    shot(browser, f"inbox-dark-{size}")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    refused = [entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]
    assert refused == []  # search, quick replies, suggest and media work under the panel's CSP
