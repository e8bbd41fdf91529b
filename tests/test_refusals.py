"""Every start-up refusal is one pt-BR line for the shop owner: the setting first, an example of a right value.

The cases below reach every `raise` of config.py (checked by tracing them), so a new refusal written in
English, or without an example, fails here.
"""

import ast
import dataclasses
import re
import sys

import pytest

import config
from config import SettingsError, load_settings
from test_config import run_without

LONG = "0123456789abcdef"
CLOUD = {"WHATSAPP_TOKEN": "t" * 20, "WHATSAPP_APP_SECRET": "s" * 20, "WHATSAPP_VERIFY_TOKEN": "v" * 20}

# (environment, what the process requires, the setting the line must name first)
CASES = [
    ({"DEBOUNCE_SECONDS": "soon"}, (), "DEBOUNCE_SECONDS"),
    ({"HISTORY_MAX_TURNS": "twenty"}, (), "HISTORY_MAX_TURNS"),
    ({"REPLY_TO_GROUPS": "maybe"}, (), "REPLY_TO_GROUPS"),
    ({"WEBHOOK_TOKEN": "   "}, (), "WEBHOOK_TOKEN"),
    ({"EVOLUTION_API": "http://evolution:8080"}, (), "EVOLUTION_API"),
    ({}, ("GEMINI_API_KEY",), "GEMINI_API_KEY"),
    ({}, ("WEBHOOK_TOKEN",), "WEBHOOK_TOKEN"),
    ({}, ("EVOLUTION_API_URL",), "EVOLUTION_API_URL"),
    ({"EVOLUTION_API_URL": "evolution:8080"}, (), "EVOLUTION_API_URL"),
    ({"REDIS_DOWN": "sometimes"}, (), "REDIS_DOWN"),
    ({"LOG_LEVEL": "verbose"}, (), "LOG_LEVEL"),
    ({"MAX_INPUT_CHARS": "0"}, (), "MAX_INPUT_CHARS"),
    ({"DEBOUNCE_SECONDS": "-1"}, (), "DEBOUNCE_SECONDS"),
    ({"MAX_TYPING_MS": "20000"}, (), "EVOLUTION_TIMEOUT_SECONDS"),
    ({"GEMINI_TIMEOUT_SECONDS": "80"}, (), "JOB_LEASE_SECONDS"),
    ({"MAX_REGENERATIONS": "-1"}, (), "MAX_REGENERATIONS"),
    ({"WHATSAPP_TOKEN": "t" * 20}, (), "WHATSAPP_APP_SECRET"),
    ({"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t", "TWILIO_WEBHOOK_URL": "bot.example.com"}, (),
     "TWILIO_WEBHOOK_URL"),
    ({**CLOUD, "WHATSAPP_API_VERSION": "23"}, (), "WHATSAPP_API_VERSION"),
    ({"EVOLUTION_API_KEY": "change-me-long-random-string"}, (), "EVOLUTION_API_KEY"),
    ({"PANEL_PASSWORD": LONG[:-1]}, (), "PANEL_PASSWORD"),
    ({"REDIS_URL": "redis://:short@redis:6379/0"}, (), "REDIS_PASSWORD"),
    ({"BUSINESS_HOURS": "seg-sex 8h-18h"}, (), "BUSINESS_HOURS"),
    ({"BUSINESS_TIMEZONE": "Brasil/Fortaleza"}, (), "BUSINESS_TIMEZONE"),
    ({"BOT_ACTIVE": "sometimes"}, (), "BOT_ACTIVE"),
    ({"BOT_ACTIVE": "outside_business_hours"}, (), "BUSINESS_HOURS"),
    ({"OWNER_NUMBER": "5511999998888, meu celular"}, (), "OWNER_NUMBER"),
    ({"HANDOFF_PAUSE_MINUTES": "-1"}, (), "HANDOFF_PAUSE_MINUTES"),
    ({"GEMINI_MAX_OUTPUT_TOKENS": "0"}, (), "GEMINI_MAX_OUTPUT_TOKENS"),
    ({"GEMINI_THINKING_BUDGET": "-2"}, (), "GEMINI_THINKING_BUDGET"),
    ({"WORKER_CONCURRENCY": "0"}, (), "WORKER_CONCURRENCY"),  # main's refusal without a case (issue 18's merge)
    ({"GEMINI_CACHE_MIN_TOKENS": "-2"}, (), "GEMINI_CACHE_MIN_TOKENS"),
    ({"GEMINI_CACHE_TTL_MINUTES": "0"}, (), "GEMINI_CACHE_TTL_MINUTES"),
    ({"TRUSTED_PROXY": "nginx"}, (), "TRUSTED_PROXY"),
    ({"PANEL_MAX_FAILED_LOGINS_PER_HOUR": "0"}, (), "PANEL_MAX_FAILED_LOGINS_PER_HOUR"),
    ({"PANEL_PASSWORD": "f3a9c2e17b5d48a0"}, (), "PANEL_SECRET_KEY"),
    ({"PANEL_PASSWORD": "f3a9c2e17b5d48a0", "PANEL_SECRET_KEY": "k" * 40, "WEBHOOK_TOKEN": "k" * 40}, (),
     "PANEL_SECRET_KEY"),
    ({"PANEL_PASSWORD": "senhasenhasenha2024", "PANEL_SECRET_KEY": "k" * 40}, (), "PANEL_PASSWORD"),
    ({"EVENTS_URL": "n8n:5678/webhook/bot"}, (), "EVENTS_URL"),
    ({"EVENTS_URL": "https://n8n.example.com/webhook/bot"}, (), "EVENTS_SECRET"),
    ({"EVENTS_RETRY_HOURS": "0"}, (), "EVENTS_RETRY_HOURS"),
    ({"VOICE_REPLIES": "sometimes"}, (), "VOICE_REPLIES"),
    ({"VOICE_MAX_CHARS": "0"}, (), "VOICE_MAX_CHARS"),
    ({"VOICE_REPLIES": "always", "VOICE_NAME": " "}, (), "VOICE_NAME"),
    ({"VOICE_REPLIES": "always", "VOICE_MODEL": " "}, (), "VOICE_MODEL"),
    ({"FOLLOWUP_AFTER_MINUTES": "-1"}, (), "FOLLOWUP_AFTER_MINUTES"),
    ({"FOLLOWUP_MAX": "0"}, (), "FOLLOWUP_MAX"),
    ({"FOLLOWUP_AFTER_MINUTES": "60", "FOLLOWUP_PROMPT": " "}, (), "FOLLOWUP_MESSAGE"),
    ({"FOLLOWUP_TEMPLATE": "retomar conversa"}, (), "FOLLOWUP_TEMPLATE"),
]

ENGLISH = {"must", "got", "is", "are", "required", "cannot", "the", "should", "shorter", "than", "unknown",
           "missing", "not", "or", "and", "with", "without", "run", "still", "placeholder", "invalid", "set",
           "characters", "positive", "only", "of", "for", "see", "when", "exceed", "longer", "look", "like"}
PORTUGUESE = {"precisa", "falta", "faltam", "use", "veio", "ainda", "curta", "não", "só", "rode", "entendi",
              "desconhecido", "termina", "preenchido"}


def words(line):
    """The line's own words: without quoted values, setting names, URLs and what follows `NAME=`."""
    line = re.sub(r"'[^']*'|\"[^\"]*\"|https?://\S+|[A-Z][A-Z0-9_]{2,}(=\S*)?", " ", line)
    return set(re.findall(r"[a-zà-ú]+", line.lower()))


def assert_portuguese_refusal(message, name):
    assert "\n" not in message
    assert message.startswith(f"{name}") and f"Exemplo: {name}=" in message, message
    found = words(message)
    assert not found & ENGLISH, (found & ENGLISH, message)
    assert found & PORTUGUESE, message


def refusal(env, require):
    with pytest.raises(SettingsError) as caught:
        load_settings(env, require=require)
    return str(caught.value)


@pytest.mark.parametrize("env, require, name", CASES)
def test_each_refusal_is_one_portuguese_line_naming_the_setting_with_an_example(env, require, name):
    assert_portuguese_refusal(refusal(env, require), name)


def test_the_example_in_a_refusal_is_itself_accepted():
    """"Exemplo: NAME=value" is a right value: pasting it makes that refusal go away."""
    for env, require, name in CASES:
        example = refusal(env, require).split(f"Exemplo: {name}=", 1)[1].split(" (")[0]
        if name in config.SECRETS or name in ("REDIS_PASSWORD", "EVOLUTION_API", "GEMINI_API_KEY") \
                or name not in {field.upper() for field in config.Settings.__dataclass_fields__}:
            continue  # a placeholder for a secret, or a setting that is not a field
        fixed = {**env, name: example}
        try:
            load_settings(fixed, require=require)
        except SettingsError as error:
            assert not str(error).startswith(name), (name, example, str(error))


def test_the_cases_reach_every_refusal_in_config():
    """Trace config.py while the cases run: every `raise SettingsError`/`raise refuse(...)` line is hit."""
    tree = ast.parse(open(config.__file__, encoding="utf-8").read())
    raises = {node.lineno for node in ast.walk(tree) if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
              and getattr(node.exc.func, "id", "") in ("SettingsError", "refuse")}
    assert len(raises) > 20
    hit = set()

    def tracer(frame, event, arg):
        if frame.f_code.co_filename == config.__file__:
            if event == "line":
                hit.add(frame.f_lineno)
            return tracer
        return None

    sys.settrace(tracer)
    try:
        for env, require, _ in CASES:
            with pytest.raises(SettingsError):
                load_settings(env, require=require)
    finally:
        sys.settrace(None)
    assert sorted(raises - hit) == [], "refusals no case reaches: add a case above"


@pytest.mark.parametrize("field", [field for field in dataclasses.fields(config.Settings)
                                   if field.type in (int, float, bool)], ids=lambda field: field.name)
def test_every_number_or_yes_no_setting_refuses_a_word_in_portuguese(field):
    name = field.name.upper()
    assert_portuguese_refusal(refusal({name: "abc"}, ()), name)


def test_the_worker_and_the_webhook_stop_with_that_one_line():
    code, lines = run_without("worker.py", DEBOUNCE_SECONDS="dois minutos")
    assert code != 0 and len(lines) == 1, lines
    assert lines[0].startswith("erro de configuração: DEBOUNCE_SECONDS: precisa ser um número")
    assert_portuguese_refusal(lines[0].split(": ", 1)[1], "DEBOUNCE_SECONDS")
    code, lines = run_without("-c", "import webhook; webhook.app", BUSINESS_HOURS="seg-sex 8h-18h")
    assert code != 0 and len(lines) == 1, lines
    assert_portuguese_refusal(lines[0].split(": ", 1)[1], "BUSINESS_HOURS")
