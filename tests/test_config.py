"""load_settings: defaults, required names, parsing errors, the original README's names, validation."""

import dataclasses
import os
import re
import subprocess
import sys

import pytest

import config
from config import REQUIRED_FOR_REPLYING, SettingsError, init_env, load_settings
from conftest import ROOT

REPLYING = {"EVOLUTION_API_URL": "http://evolution:8080", "EVOLUTION_API_KEY": "a-long-evolution-key", "GEMINI_API_KEY": "g"}


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
        "AUTHENTICATION_API_KEY": "legacy-evolution-key",
        "CACHE_REDIS_URI": "redis://cache:6379/2",
        "GEMINI_API_KEY": "g",
    }, require=("REDIS_URL", *REQUIRED_FOR_REPLYING))
    assert settings.evolution_api_url == "http://evolution:8080"
    assert settings.evolution_instance == "Ivo Teste"
    assert settings.evolution_api_key == "legacy-evolution-key"
    assert settings.redis_url == "redis://cache:6379/2"


def test_new_names_win_over_the_original_ones():
    settings = load_settings({
        "EVOLUTION_API": "http://old:8080/message/sendText/old",
        "EVOLUTION_API_URL": "http://new:8080", "EVOLUTION_INSTANCE": "new",
        "AUTHENTICATION_API_KEY": "old-evolution-key", "EVOLUTION_API_KEY": "new-evolution-key",
        "CACHE_REDIS_URI": "redis://old:6379/0", "REDIS_URL": "redis://new:6379/0",
    }, require=())
    assert (settings.evolution_api_url, settings.evolution_instance) == ("http://new:8080", "new")
    assert settings.evolution_api_key == "new-evolution-key"
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
                              EVOLUTION_API_URL="http://127.0.0.1:1", EVOLUTION_API_KEY="a-long-evolution-key")
    assert code != 0
    assert len(lines) == 1 and "GEMINI_API_KEY" in lines[0], lines


def test_webhook_without_token_exits_naming_it_unless_unauthenticated_is_allowed():
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "EVOLUTION_API_URL": "http://127.0.0.1:1",
           "EVOLUTION_API_KEY": "a-long-evolution-key", "GEMINI_API_KEY": "g"}
    code, lines = run_without("-c", "import webhook; webhook.app", **env)
    assert code != 0
    assert len(lines) == 1 and "WEBHOOK_TOKEN" in lines[0] and "ALLOW_UNAUTHENTICATED_WEBHOOK" in lines[0], lines
    code, lines = run_without("-c", "import webhook; webhook.app", **env, ALLOW_UNAUTHENTICATED_WEBHOOK="true")
    assert code == 0, lines
    assert any("WEBHOOK_TOKEN is not set" in line for line in lines), lines  # allowed, but never silently


# --- secrets that cannot stay placeholders --------------------------------------------------

LONG = "0123456789abcdef"  # 16 characters: the shortest accepted


def test_empty_webhook_token_is_refused_only_where_the_webhook_is_served():
    with pytest.raises(SettingsError, match="WEBHOOK_TOKEN"):
        load_settings({}, require=("WEBHOOK_TOKEN",))
    assert load_settings({"ALLOW_UNAUTHENTICATED_WEBHOOK": "true"}, require=("WEBHOOK_TOKEN",)).webhook_token == ""
    assert load_settings({}, require=()).webhook_token == ""  # the worker and unit tests need no token
    assert load_settings({"WEBHOOK_TOKEN": LONG}, require=("WEBHOOK_TOKEN",)).webhook_token == LONG


@pytest.mark.parametrize("name", ["EVOLUTION_API_KEY", "WEBHOOK_TOKEN", "PANEL_PASSWORD", "GEMINI_API_KEY",
                                  "AUTHENTICATION_API_KEY"])
@pytest.mark.parametrize("value", ["change-me-long-random-string", "CHANGE-ME-too-but-it-is-long"])
def test_placeholder_secret_is_refused_naming_it(name, value):
    with pytest.raises(SettingsError) as error:
        load_settings({name: value}, require=())
    assert config.FALLBACK_NAMES.get("EVOLUTION_API_KEY") == "AUTHENTICATION_API_KEY"
    assert ("EVOLUTION_API_KEY" if name == "AUTHENTICATION_API_KEY" else name) in str(error.value)
    assert value not in str(error.value)  # never echo a secret


@pytest.mark.parametrize("name", ["EVOLUTION_API_KEY", "WEBHOOK_TOKEN", "PANEL_PASSWORD"])
def test_short_chosen_secret_is_refused_and_sixteen_characters_pass(name):
    key = {"PANEL_SECRET_KEY": "0123456789abcdef" * 3}  # the panel's own key, needed with PANEL_PASSWORD
    value = "f3a9c2e17b5d48a0" if name == "PANEL_PASSWORD" else LONG  # LONG is a sequence: a weak password
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value[:-1], **key}, require=())
    assert getattr(load_settings({name: value, **key}, require=()), name.lower()) == value


def test_gemini_key_is_issued_by_google_so_its_length_is_not_checked():
    assert load_settings({"GEMINI_API_KEY": "g"}, require=()).gemini_api_key == "g"


@pytest.mark.parametrize("url, ok", [
    ("redis://:short@redis:6379/0", False),
    ("redis://:change-me-redis-password@redis:6379/0", False),
    ("redis://default:short@redis:6379/0", False),
    ("redis://redis:6379/0?password=short", False),
    (f"redis://:{LONG}@redis:6379/0", True),
    ("redis://localhost:6379/0", True),  # no password: a local Redis for development
])
def test_redis_password_in_the_url_must_be_long_and_not_a_placeholder(url, ok):
    if ok:
        assert load_settings({"REDIS_URL": url}, require=()).redis_url == url
    else:
        with pytest.raises(SettingsError, match="REDIS_URL"):
            load_settings({"REDIS_URL": url}, require=())


@pytest.mark.parametrize("name", ["WEBHOOK_TOKEN", "EVOLUTION_API_KEY", "PANEL_PASSWORD"])
def test_secret_of_only_spaces_is_refused_instead_of_becoming_empty(name):
    with pytest.raises(SettingsError, match=name):
        load_settings({name: "   "}, require=())


def test_panel_password_defaults_to_empty_meaning_no_panel():
    assert load_settings({}, require=()).panel_password == ""


# --- python3 config.py --init-env -------------------------------------------------------------

GENERATED = ("EVOLUTION_API_KEY", "WEBHOOK_TOKEN", "PANEL_PASSWORD", "PANEL_SECRET_KEY", "REDIS_PASSWORD",
             "EVOLUTION_DB_PASSWORD")


def read_env(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


GEMINI_KEY = "AIzaSyD-fake_key_for_tests_0123456789ab"  # the shape of Google's keys; not a real one


def init_env_process(*args, stdin=""):
    """`python3 config.py --init-env …` as the owner runs it, with `stdin` as its standard input (not a terminal)."""
    return subprocess.run([sys.executable, str(ROOT / "config.py"), "--init-env", *args], input=stdin,
                          env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60)


def test_init_env_creates_env_from_the_example_with_strong_url_safe_secrets_and_the_key_on_stdin(tmp_path):
    done = init_env_process(str(tmp_path / ".env"), stdin=GEMINI_KEY + "\n")
    assert done.returncode == 0, done.stderr
    values = read_env(tmp_path / ".env")
    for name in GENERATED:
        assert len(values[name]) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", values[name]), name
        assert name in done.stdout and values[name] not in done.stdout + done.stderr  # names, never values
    assert "PANEL_PASSWORD" in done.stdout and str(tmp_path / ".env") in done.stdout  # where to find the login
    assert len({values[name] for name in GENERATED}) == len(GENERATED)
    assert values["GEMINI_API_KEY"] == GEMINI_KEY and GEMINI_KEY not in done.stdout + done.stderr
    assert "Próximos passos" in done.stdout and "docker compose up -d --build" in done.stdout  # what to do next, pt-BR
    assert "/panel" in done.stdout and "Conectar WhatsApp" in done.stdout
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0  # readable by the owner only
    example = (ROOT / ".env.example").read_text().splitlines()
    assert len((tmp_path / ".env").read_text().splitlines()) == len(example)  # every other line kept
    env = {**values, "EVOLUTION_API_URL": "http://evolution:8080",
           "REDIS_URL": f"redis://:{values['REDIS_PASSWORD']}@redis:6379/0"}
    load_settings(env, require=("REDIS_URL", "WEBHOOK_TOKEN", *REQUIRED_FOR_REPLYING))  # the bot accepts them


def test_init_env_without_a_key_fills_the_secrets_and_stops_saying_how_to_add_it(tmp_path):
    done = init_env_process(str(tmp_path / ".env"), stdin="")
    assert done.returncode == 1  # `--init-env && docker compose up` goes no further
    assert read_env(tmp_path / ".env")["GEMINI_API_KEY"] == ""
    assert all(read_env(tmp_path / ".env")[name] for name in GENERATED)
    assert "Falta a chave do Gemini" in done.stdout and "--gemini-key SUA_CHAVE" in done.stdout
    done = init_env_process("--gemini-key", GEMINI_KEY, str(tmp_path / ".env"))  # the second run adds the key
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_env(tmp_path / ".env")["GEMINI_API_KEY"] == GEMINI_KEY
    assert "não mudei nenhuma" in done.stdout and "A chave do Gemini foi salva" in done.stdout


def test_init_env_refuses_a_key_with_spaces_and_changes_nothing(tmp_path):
    done = init_env_process(str(tmp_path / ".env"), stdin="minha chave do gemini\n")
    assert done.returncode == 2 and not (tmp_path / ".env").exists()
    assert done.stderr.startswith("erro: GEMINI_API_KEY:") and "aistudio.google.com/apikey" in done.stderr


def test_init_env_does_not_ask_again_when_the_key_is_already_there(tmp_path):
    (tmp_path / ".env").write_text(f"GEMINI_API_KEY={GEMINI_KEY}\n")
    done = init_env_process(str(tmp_path / ".env"), stdin="AIzaSy-another-key-0123456789abcd\n")
    assert done.returncode == 0 and read_env(tmp_path / ".env")["GEMINI_API_KEY"] == GEMINI_KEY


def test_init_env_never_overwrites_a_chosen_value_and_replaces_placeholders(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("GEMINI_API_KEY=my-gemini-key\nEVOLUTION_API_KEY=my-own-evolution-key-123\n"
                        "WEBHOOK_TOKEN=change-me-too\n# EVOLUTION_DB_PASSWORD=evolution\nPANEL_PASSWORD=\n")
    filled = init_env(env_file, ROOT / ".env.example")
    assert set(filled) == {"WEBHOOK_TOKEN", "PANEL_PASSWORD", "PANEL_SECRET_KEY", "REDIS_PASSWORD", "EVOLUTION_DB_PASSWORD"}
    values = read_env(env_file)
    assert values["EVOLUTION_API_KEY"] == "my-own-evolution-key-123"
    assert values["GEMINI_API_KEY"] == "my-gemini-key"
    assert not values["WEBHOOK_TOKEN"].startswith("change-me") and len(values["WEBHOOK_TOKEN"]) >= 32
    assert "# EVOLUTION_DB_PASSWORD=evolution" in env_file.read_text()
    before = env_file.read_text()
    assert init_env(env_file, ROOT / ".env.example") == []  # a second run changes nothing
    assert env_file.read_text() == before


# --- the panel's own key and password (issue 20) ------------------------------------------------

PANEL = {"PANEL_PASSWORD": "cavalo-correto-bateria-grampo", "PANEL_SECRET_KEY": "k" * 8 + "0123456789abcdef" * 2,
         "WEBHOOK_TOKEN": "token-do-webhook-bem-longo", "EVOLUTION_INSTANCE": "padariadosol"}


def test_an_existing_env_gains_a_panel_secret_key_of_its_own(tmp_path):
    env_file = tmp_path / ".env"
    chosen = "GEMINI_API_KEY=chave-do-gemini\n" + "".join(
        f"{name}=valor-escolhido-{index:02d}-abcdefgh\n" for index, name in enumerate(GENERATED) if name != "PANEL_SECRET_KEY")
    env_file.write_text(chosen)
    done = subprocess.run([sys.executable, str(ROOT / "config.py"), "--init-env", str(env_file)],
                          env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    values = read_env(env_file)
    assert env_file.read_text().startswith(chosen)  # nothing chosen was touched
    key = values["PANEL_SECRET_KEY"]
    assert len(key) >= 32 and key not in chosen and "PANEL_SECRET_KEY" in done.stdout and key not in done.stdout


@pytest.mark.parametrize("key", ["", "curta-demais-0123456789"])
def test_the_panel_refuses_to_start_without_a_long_secret_key(key):
    with pytest.raises(SettingsError, match=r"^PANEL_SECRET_KEY: falta ou tem menos de 32 caracteres .*Exemplo: PANEL_SECRET_KEY="):
        load_settings({**PANEL, "PANEL_SECRET_KEY": key}, require=())
    assert load_settings({**PANEL, "PANEL_PASSWORD": "", "PANEL_SECRET_KEY": ""}, require=())  # no panel, no key


def test_the_secret_key_is_no_other_secret():
    with pytest.raises(SettingsError, match="^PANEL_SECRET_KEY: não pode ser igual"):
        load_settings({**PANEL, "WEBHOOK_TOKEN": PANEL["PANEL_SECRET_KEY"]}, require=())


@pytest.mark.parametrize("password, why", [
    ("aaaaaaaaaaaaaaaaaaaa", "repetido"), ("abcabcabcabcabcabc", "repetido"),
    ("padariadosol2024!", "nome da instância"), ("PadariaDoSol-senha-forte", "nome da instância"),
    ("senhasenhasenha2024", "palavra comum"), ("1234567890123456", "palavra comum"),
    ("Password1234567890", "palavra comum"), ("qwertyuiop123456", "palavra comum"),
])
def test_weak_panel_passwords_are_refused_beyond_their_length(password, why):
    with pytest.raises(SettingsError, match=f"^PANEL_PASSWORD: fraca .*{why}.*Exemplo: PANEL_PASSWORD="):
        load_settings({**PANEL, "PANEL_PASSWORD": password}, require=())


def test_a_random_or_long_passphrase_is_accepted():
    assert load_settings(PANEL, require=()).panel_password == PANEL["PANEL_PASSWORD"]
    load_settings({**PANEL, "PANEL_PASSWORD": "f3a9c2e17b5d48a0c6e2"}, require=())


def test_trusted_proxy_takes_addresses_and_networks_only():
    assert load_settings({**PANEL, "TRUSTED_PROXY": "127.0.0.1, 172.16.0.0/12"}, require=()).trusted_proxy == (
        "127.0.0.1", "172.16.0.0/12")
    with pytest.raises(SettingsError, match="^TRUSTED_PROXY: 'nginx' não é um endereço IP.*Exemplo: TRUSTED_PROXY=127.0.0.1"):
        load_settings({**PANEL, "TRUSTED_PROXY": "nginx"}, require=())


@pytest.mark.parametrize("value", ["0", "-4", "5000"])
def test_worker_concurrency_out_of_range_stops_start_up_in_portuguese(value):
    with pytest.raises(SettingsError) as error:
        load_settings({"WORKER_CONCURRENCY": value}, require=())
    assert str(error.value).startswith("WORKER_CONCURRENCY: precisa ser de 1 a 1000")
    assert str(error.value).endswith("Exemplo: WORKER_CONCURRENCY=200")


def test_worker_concurrency_is_read():
    assert load_settings({}, require=()).worker_concurrency == 200
    assert load_settings({"WORKER_CONCURRENCY": "8"}, require=()).worker_concurrency == 8
