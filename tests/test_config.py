"""load_settings: defaults, required names, parsing errors, the original README's names, validation."""

import dataclasses
import os
import subprocess
import sys

import pytest

from config import REQUIRED_FOR_REPLYING, SettingsError, load_settings
from conftest import ROOT

REPLYING = {"EVOLUTION_API_URL": "http://evolution:8080", "EVOLUTION_API_KEY": "k", "GEMINI_API_KEY": "g"}


def test_defaults_when_nothing_is_set():
    settings = load_settings({}, require=())
    assert settings.gemini_model == "gemini-flash-latest"
    assert settings.debounce_seconds == 120
    assert settings.history_max_turns == 20
    assert settings.history_ttl_days == 7
    assert settings.history_ttl_seconds == 7 * 86400
    assert settings.max_message_age_seconds == 1800
    assert settings.redis_down == "direct"
    assert settings.redis_url == "redis://localhost:6379/0"


def test_values_are_read_and_typed():
    settings = load_settings({"DEBOUNCE_SECONDS": "2.5", "HISTORY_MAX_TURNS": " 5 ", "REPLY_TO_GROUPS": "Yes",
                              "MARK_READ": "off", "GEMINI_MODEL": "gemini-2.5-pro"}, require=())
    assert (settings.debounce_seconds, settings.history_max_turns) == (2.5, 5)
    assert (settings.reply_to_groups, settings.mark_read) == (True, False)
    assert settings.gemini_model == "gemini-2.5-pro"


@pytest.mark.parametrize("missing", REQUIRED_FOR_REPLYING)
def test_missing_required_setting_is_named(missing):
    env = {name: value for name, value in REPLYING.items() if name != missing}
    with pytest.raises(SettingsError, match=missing):
        load_settings(env, require=REQUIRED_FOR_REPLYING)


def test_required_setting_set_to_empty_is_missing():
    with pytest.raises(SettingsError, match="REDIS_URL"):
        load_settings({"REDIS_URL": "  "}, require=("REDIS_URL",))


@pytest.mark.parametrize("name, value", [
    ("HISTORY_MAX_TURNS", "twenty"),  # int
    ("DEDUPE_TTL_SECONDS", "1.5"),  # int
    ("DEBOUNCE_SECONDS", "soon"),  # float
    ("REPLY_TO_GROUPS", "maybe"),  # bool
])
def test_malformed_value_is_named(name, value):
    with pytest.raises(SettingsError) as error:
        load_settings({name: value}, require=())
    assert name in str(error.value) and value in str(error.value)


def test_original_readme_names_still_work():
    settings = load_settings({
        "EVOLUTION_API": "http://evolution:8080/message/sendText/Ivo%20Teste",
        "AUTHENTICATION_API_KEY": "legacy-key",
        "CACHE_REDIS_URI": "redis://cache:6379/2",
        "GEMINI_API_KEY": "g",
    }, require=("REDIS_URL", *REQUIRED_FOR_REPLYING))
    assert settings.evolution_api_url == "http://evolution:8080"
    assert settings.evolution_instance == "Ivo Teste"
    assert settings.evolution_api_key == "legacy-key"
    assert settings.redis_url == "redis://cache:6379/2"


def test_new_names_win_over_the_original_ones():
    settings = load_settings({
        "EVOLUTION_API": "http://old:8080/message/sendText/old",
        "EVOLUTION_API_URL": "http://new:8080", "EVOLUTION_INSTANCE": "new",
        "AUTHENTICATION_API_KEY": "old-key", "EVOLUTION_API_KEY": "new-key",
        "CACHE_REDIS_URI": "redis://old:6379/0", "REDIS_URL": "redis://new:6379/0",
    }, require=())
    assert (settings.evolution_api_url, settings.evolution_instance) == ("http://new:8080", "new")
    assert settings.evolution_api_key == "new-key"
    assert settings.redis_url == "redis://new:6379/0"


def test_legacy_url_that_is_not_a_send_text_url_is_named():
    with pytest.raises(SettingsError, match="EVOLUTION_API"):
        load_settings({"EVOLUTION_API": "http://evolution:8080"}, require=())


def test_comma_lists_are_split_trimmed_and_lowercased():
    settings = load_settings({"HANDOFF_KEYWORDS": " Atendente, HUMANO ,,", "IGNORE_NUMBERS": "5511999990001,"},
                             require=())
    assert settings.handoff_phrases == ("atendente", "humano")
    assert settings.ignore_numbers == ("5511999990001",)


@pytest.mark.parametrize("name, bad, good", [
    ("REDIS_DOWN", "sometimes", "retry"),
    ("LOG_LEVEL", "verbose", "debug"),
    ("EVOLUTION_API_URL", "evolution:8080", "https://evolution.example"),
])
def test_out_of_range_value_is_named(name, bad, good):
    with pytest.raises(SettingsError, match=name):
        load_settings({name: bad}, require=())
    assert getattr(load_settings({name: good}, require=()), name.lower()) == good


def test_settings_are_frozen():
    settings = load_settings({}, require=())
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.debounce_seconds = 0


# --- start-up in a real process, with an environment that lacks a required setting -----------

def run_without(*args, **env):
    """Run the bot with only `env` (and PATH) set; PYTHON_DOTENV_DISABLED keeps any .env out."""
    clean = {"PATH": os.environ["PATH"], "PYTHON_DOTENV_DISABLED": "1", **env}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, lines


def test_webhook_without_settings_exits_with_one_line_naming_what_is_missing():
    code, lines = run_without("-c", "import webhook; webhook.app")
    assert code != 0
    assert len(lines) == 1 and "EVOLUTION_API_URL" in lines[0], lines


def test_worker_without_gemini_key_exits_with_one_line_naming_it():
    code, lines = run_without("worker.py", REDIS_URL="redis://127.0.0.1:1/0",
                              EVOLUTION_API_URL="http://127.0.0.1:1", EVOLUTION_API_KEY="k")
    assert code != 0
    assert len(lines) == 1 and "GEMINI_API_KEY" in lines[0], lines
