"""One follow-up after silence (followup.py) on real processes with the fakes: sent once, and never when the
customer wrote, a person took the chat, WhatsApp's window has closed or the shop is closed."""

import time
from datetime import datetime, timedelta, timezone

import pytest

import buffer
import chat_ids
import memory
import config
import hours
import shop_settings
from conftest import CUSTOMER, GRAPH_TOKEN, INSTANCE, PANEL_KEY, PHONE_NUMBER_ID, load_payload, text_message, wait_until
from test_channels_stack import APP_SECRET, VERIFY, cloud_body, post_cloud
from test_events import PASSWORD, panel_session

CID = buffer.chat_ref(INSTANCE, f"{CUSTOMER}@s.whatsapp.net")
NUDGE = "Ainda posso te ajudar com alguma coisa?"
ANSWER = "Temos sim, o tênis custa R$ 199."
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def texts(evolution):
    return [text for _, _, text in evolution.sent_texts()]


@pytest.fixture
def gemini_answers(gemini):
    gemini.reply_with(ANSWER)
    return gemini


def test_a_follow_up_goes_out_once_after_silence(start_stack, gemini_answers, evolution):
    stack = start_stack(followup_after_minutes="0.05", followup_message=NUDGE, panel_password=PASSWORD)  # 3 s
    stack.post(text_message("Tem o tênis 42?", "FU1"))
    wait_until(lambda: texts(evolution) == [ANSWER], timeout=20, message="the answer")
    answered = time.time()
    wait_until(lambda: len(texts(evolution)) == 2, timeout=20, message="the follow-up")
    assert time.time() - answered >= 2.5  # not before FOLLOWUP_AFTER_MINUTES
    time.sleep(5)  # FOLLOWUP_MAX=1: never a second one
    assert texts(evolution) == [ANSWER, NUDGE]
    redis = stack.redis.client()
    thread = memory.thread(redis, CID)
    assert [(m["from"], m["kind"], m["text"]) for m in thread[-1:]] == [("bot", "followup", NUDGE)]
    assert memory.load_history(redis, CID)[-1] == {"role": "model", "text": f"{ANSWER}\n\n{NUDGE}"}  # the bot's run
    assert redis.zscore(buffer.DUE, CID) is None and not redis.exists(f"wa:followup:{CID}")
    http, _ = panel_session(stack)
    page = http.get(f"{stack.url}/panel/chats/{chat_ids.public(PANEL_KEY.encode(), CID)}", timeout=10).text
    assert "[lembrete]" in page and NUDGE in page


def test_gemini_writes_the_follow_up_from_the_conversation(start_stack, gemini, evolution):
    prompt = config.PT_FOLLOWUP_PROMPT
    gemini.responder = lambda body: "Conseguiu ver o tamanho?" if prompt in str(body["contents"][-1]) else ANSWER
    stack = start_stack(followup_after_minutes="0.05")
    stack.post(text_message("Tem o tênis 42?", "FU2"))
    wait_until(lambda: len(texts(evolution)) == 2, timeout=20, message="the follow-up")
    assert texts(evolution) == [ANSWER, "Conseguiu ver o tamanho?"]
    assert gemini.user_texts(1) == [prompt]
    assert {"role": "model", "parts": [{"text": ANSWER}]} in gemini.requests[1]["body"]["contents"]


def test_no_follow_up_when_the_customer_wrote(start_stack, gemini_answers, evolution):
    stack = start_stack(followup_after_minutes="0.1", followup_message=NUDGE)  # 6 s
    stack.post(text_message("Tem o tênis 42?", "FU3"))
    wait_until(lambda: texts(evolution) == [ANSWER], timeout=20, message="the answer")
    sticker = load_payload("50_v2_2_stickerMessage.json")  # the customer answers; the bot has nothing to say to it
    sticker["instance"] = INSTANCE
    sticker["data"]["key"]["remoteJid"] = f"{CUSTOMER}@s.whatsapp.net"
    sticker["data"]["messageTimestamp"] = int(time.time())
    # "buffered" once the follow-up sits in wa:due (the webhook's script then counts no new burst)
    assert stack.post(sticker)["results"][0] in ("scheduled", "buffered")
    time.sleep(9)
    assert texts(evolution) == [ANSWER]


def test_no_follow_up_when_a_person_answered(start_stack, gemini_answers, evolution):
    stack = start_stack(followup_after_minutes="0.05", followup_message=NUDGE)
    stack.post(text_message("Tem o tênis 42?", "FU4"))
    wait_until(lambda: texts(evolution) == [ANSWER], timeout=20, message="the answer")
    assert stack.post(text_message("Oi! Aqui é a Carla, separei um pra você.", "FU4P", from_me=True))["results"] == [
        "paused"]
    time.sleep(6)
    assert texts(evolution) == [ANSWER]
    assert not stack.redis.client().exists(f"wa:followup:{CID}")


def test_no_follow_up_while_the_owner_paused_the_bot(start_stack, gemini_answers, evolution):
    stack = start_stack(followup_after_minutes="0.05", followup_message=NUDGE)
    stack.post(text_message("Tem o tênis 42?", "FU4B"))
    wait_until(lambda: texts(evolution) == [ANSWER], timeout=20, message="the answer")
    stack.redis.client().hset(shop_settings.KEY, "bot_paused", "true")  # the panel's Configurações switch
    time.sleep(6)
    assert texts(evolution) == [ANSWER]
    assert not stack.redis.client().exists(f"wa:followup:{CID}")


def test_no_follow_up_once_23_hours_have_passed(start_stack, gemini_answers, evolution):
    stack = start_stack(followup_after_minutes="0.05", followup_message=NUDGE, max_message_age_seconds=90000)
    written = time.time() - 23 * 3600 + 2  # the customer's message: 23 h ago by the time the follow-up is due
    stack.post(text_message("Tem o tênis 42?", "FU5", timestamp=written))
    wait_until(lambda: texts(evolution) == [ANSWER], timeout=20, message="the answer")
    time.sleep(6)
    assert texts(evolution) == [ANSWER]
    assert not stack.redis.client().exists(f"wa:followup:{CID}")


def test_cloud_api_outside_the_window_sends_only_the_template(start_stack, gemini_answers, graph):
    graph.approved.add(("retomar_conversa", "pt_BR"))
    stack = start_stack(whatsapp_token=GRAPH_TOKEN, whatsapp_app_secret=APP_SECRET, whatsapp_verify_token=VERIFY,
                        whatsapp_graph_url=graph.url, followup_after_minutes="0.05", followup_message=NUDGE,
                        followup_template="retomar_conversa:pt_BR", max_message_age_seconds=90000)
    post_cloud(stack, cloud_body(text="Tem o tênis 42?", message_id="wamid.FU6", timestamp=time.time() - 23 * 3600 + 2))
    wait_until(lambda: graph.templates, timeout=20, message="the template")
    time.sleep(4)
    assert [body for _, _, body in graph.texts()] == [ANSWER]  # no free-form text outside the window
    assert [(t["phone_number_id"], t["to"], t["name"], t["language"]) for t in graph.templates] == [
        (PHONE_NUMBER_ID, CUSTOMER, "retomar_conversa", "pt_BR")]


def test_the_follow_up_waits_for_the_shop_to_open(start_stack, gemini_answers, evolution):
    zone = hours.timezone("America/Sao_Paulo")
    opens_on = datetime.now(zone).date() + timedelta(days=2)
    stack = start_stack(followup_after_minutes="0.05", followup_message=NUDGE,
                        business_hours=f"{DAYS[opens_on.weekday()]} 08:00-18:00")  # closed today and tomorrow
    stack.post(text_message("Tem o tênis 42?", "FU7"))
    wait_until(lambda: texts(evolution) == [ANSWER], timeout=20, message="the answer")
    time.sleep(6)
    assert texts(evolution) == [ANSWER]
    redis = stack.redis.client()
    opening = datetime(opens_on.year, opens_on.month, opens_on.day, 8, tzinfo=zone).timestamp()
    assert float(redis.hget(f"wa:followup:{CID}", "at")) == pytest.approx(opening)
    assert redis.zscore(buffer.DUE, CID) == pytest.approx(opening)  # held in wa:due: no second scheduler


def test_next_opening():
    settings = config.load_settings({"BUSINESS_HOURS": "mon-fri 08:00-18:00, sat 08:00-12:00"}, require=())
    friday_evening = datetime(2026, 12, 4, 21, 30, tzinfo=timezone.utc)  # 18:30 in São Paulo (UTC-3)
    assert hours.next_opening(settings, friday_evening) == datetime(2026, 12, 5, 11, 0, tzinfo=timezone.utc)
    saturday_morning = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)  # open: now
    assert hours.next_opening(settings, saturday_morning) == saturday_morning
    saturday_noon = datetime(2026, 12, 5, 15, 0, tzinfo=timezone.utc)  # closed until Monday 08:00
    assert hours.next_opening(settings, saturday_noon) == datetime(2026, 12, 7, 11, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("env, named", [
    ({"FOLLOWUP_AFTER_MINUTES": "-1"}, "FOLLOWUP_AFTER_MINUTES: precisa ser 0.*Exemplo: FOLLOWUP_AFTER_MINUTES=60"),
    ({"FOLLOWUP_MAX": "0"}, "FOLLOWUP_MAX: precisa ser 1 ou mais.*Exemplo: FOLLOWUP_MAX=1"),
    ({"FOLLOWUP_AFTER_MINUTES": "30", "FOLLOWUP_PROMPT": " "}, "FOLLOWUP_MESSAGE: precisa de um texto.*Exemplo: FOLLOWUP_MESSAGE="),
    ({"FOLLOWUP_TEMPLATE": "retomar conversa"}, "FOLLOWUP_TEMPLATE: precisa ser nome:idioma.*Exemplo: FOLLOWUP_TEMPLATE=retomar_conversa:pt_BR"),
])
def test_wrong_follow_up_settings_stop_start_up_in_portuguese(bot_env, env, named):
    with pytest.raises(config.SettingsError, match=named):
        config.load_settings({**bot_env, **env}, require=())
