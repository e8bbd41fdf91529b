"""Every setting of the bot, read once from the environment (and `.env`) into one frozen object.

All defaults live here, in the dataclass below, so there is one place to look them up.
"""

import dataclasses
import logging
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

PT_FALLBACK = "Desculpe, tive um probleminha para responder agora. Uma pessoa da nossa equipe vai te responder em breve."
PT_HANDOFF = "Certo! Vou chamar uma pessoa da nossa equipe para falar com você. Aguarde um instante, por favor."
PT_OPTOUT = ("Tudo bem! Não vou mais responder automaticamente nesta conversa. "
             "Suas mensagens continuam chegando para a nossa equipe.")
PT_MEDIA_TOO_LARGE = "Recebi seu arquivo, mas ele é grande demais para eu ver. Pode me contar por texto o que precisa?"
PT_MEDIA_FAILED = "Não consegui abrir o arquivo que você enviou. Pode me contar por texto o que precisa?"


class SettingsError(Exception):
    """A required setting is missing or a setting cannot be parsed; the message names it."""


@dataclass(frozen=True)
class Settings:
    """The bot's configuration. Each field is read from the environment variable of the same name in upper case."""

    # Connections
    redis_url: str = "redis://localhost:6379/0"
    evolution_api_url: str = ""
    evolution_api_key: str = ""
    evolution_instance: str = ""
    gemini_api_key: str = ""
    gemini_model: str = "gemini-flash-latest"
    gemini_base_url: str = ""
    gemini_timeout_seconds: float = 30.0
    evolution_timeout_seconds: float = 15.0

    # What the model is told
    system_prompt: str = ""
    system_prompt_file: str = "prompts/system.md"

    # Debounce, memory, dedupe
    debounce_seconds: float = 120.0
    dedupe_ttl_seconds: int = 24 * 3600
    history_max_turns: int = 20
    history_max_chars: int = 6000  # stored size cap (UTF-8 bytes): keeps a chat's Redis under 8 KB
    history_ttl_days: float = 7.0
    max_wait_seconds: float = 300.0
    max_regenerations: int = 1
    max_message_age_seconds: int = 1800

    # Webhook
    webhook_token: str = ""
    allow_unauthenticated_webhook: bool = False  # an empty WEBHOOK_TOKEN stops the webhook unless this is true
    max_body_bytes: int = 16 * 1024 * 1024
    redis_down: str = "direct"
    direct_reply_threads: int = 4
    direct_queue_max: int = 50  # direct answers waiting per webhook process; past it, 503

    # Failures and recovery
    gemini_max_attempts: int = 4
    retry_base_seconds: float = 5.0
    send_retry_minutes: float = 10.0
    job_lease_seconds: int = 90
    sweep_seconds: int = 15
    fallback_message: str = PT_FALLBACK

    # Abuse limits
    max_input_chars: int = 4000
    max_burst_messages: int = 30
    max_reply_parts: int = 5
    rate_limit_per_hour: int = 60
    gemini_max_calls_per_hour: int = 600  # for the whole bot, every chat together (0 = no ceiling)
    max_messages_per_body: int = 50

    # Who the bot talks to
    reply_to_groups: bool = False
    ignore_numbers: tuple = ()
    only_numbers: tuple = ()
    trigger_keywords: tuple = ()
    session_expire_minutes: float = 60.0

    # Human handoff and opt-out
    handoff_pause_minutes: float = 60.0
    handoff_phrases: tuple = (
        "falar com um atendente", "falar com atendente", "falar com uma atendente", "falar com uma pessoa",
        "falar com um humano", "falar com alguem", "atendimento humano", "atendente humano",
        "quero um atendente", "chamar um atendente", "chama um atendente", "pessoa de verdade",
    )
    handoff_message: str = PT_HANDOFF
    resume_keyword: str = "#bot"
    stop_keyword: str = "#parar"
    pause_keyword: str = "#pausar"  # in the shop's own chat, with a number: pause that customer's chat
    optout_keywords: tuple = ("sair", "parar")
    optout_days: float = 30.0
    optout_message: str = PT_OPTOUT

    # Feels like a person
    send_presence: bool = True
    mark_read: bool = True
    split_messages: bool = True
    time_per_char_ms: int = 30
    max_typing_ms: int = 4000
    link_preview: bool = False  # Evolution's server would fetch any URL the model repeats
    unknown_message: str = ""

    # Media
    max_media_mb: float = 10.0
    max_media_seconds: int = 600
    max_burst_media: int = 5
    max_burst_media_mb: float = 20.0
    media_too_large_message: str = PT_MEDIA_TOO_LARGE
    media_failed_message: str = PT_MEDIA_FAILED

    log_level: str = "INFO"

    # Owner's web panel: empty means no panel.
    panel_password: str = ""
    panel_secret_key: str = ""  # signs the panel's cookies and keys chat ids in logs and URLs; --init-env makes it
    panel_max_failed_logins_per_hour: int = 100  # wrong panel passwords per hour from every address together
    trusted_proxy: tuple = ()  # addresses (or networks) of the reverse proxy whose X-Forwarded-For is believed
    log_max_entries: int = 500  # messages per chat the panel's conversation log keeps

    # --- The owner's first week (issue 13): business hours, alerts to the owner, Gemini limits ---
    business_hours: str = ""  # e.g. "mon-fri 08:00-18:00, sat 08:00-12:00" (seg…dom too); see hours.py
    business_timezone: str = "America/Sao_Paulo"
    bot_active: str = "always"  # always · outside_business_hours · during_business_hours
    closed_message: str = ""  # sent once per chat per day while the bot is off; empty: stay silent
    owner_number: tuple = ()  # numbers that get WhatsApp alerts (handoff, fallback, a number unlinked)
    gemini_max_output_tokens: int = 1024
    gemini_thinking_budget: int = 0  # 0: no thinking (short answers, faster, cheaper); -1: the model's default

    # --- Official channels (issue 11), beside Evolution: a channel with none of its settings is off ---
    whatsapp_token: str = ""  # Meta WhatsApp Cloud API: a system user's access token
    whatsapp_app_secret: str = ""  # the Meta app's secret: checks X-Hub-Signature-256 of each delivery
    whatsapp_verify_token: str = ""  # chosen by you, pasted in the Meta app's webhook setup
    whatsapp_graph_url: str = "https://graph.facebook.com"
    whatsapp_api_version: str = "v23.0"
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""  # signs Twilio's webhooks and authenticates our calls
    twilio_webhook_url: str = ""  # the public URL pasted at Twilio, e.g. https://bot.example.com/webhook/twilio
    twilio_api_url: str = "https://api.twilio.com"

    @property
    def history_ttl_seconds(self) -> int:
        return int(self.history_ttl_days * 86400)

    @property
    def job_timeout_seconds(self) -> int:
        """The whole job's worst case: Gemini, every media download, every part's send (typing waits in no job)."""
        evolution = self.evolution_timeout_seconds
        return int(self.gemini_timeout_seconds + (self.max_burst_media + self.max_reply_parts) * evolution + 30)


# Names from the original README that still work when the new name is not set.
FALLBACK_NAMES = {
    "REDIS_URL": "CACHE_REDIS_URI",
    "EVOLUTION_API_KEY": "AUTHENTICATION_API_KEY",
    "HANDOFF_PHRASES": "HANDOFF_KEYWORDS",
}

REQUIRED_FOR_REPLYING = ("EVOLUTION_API_URL", "EVOLUTION_API_KEY", "GEMINI_API_KEY")

# Secrets: none may be a `change-me…` placeholder or only spaces. The shop chooses the ones in
# CHOSEN_SECRETS (Google issues the Gemini key), so those must also be long enough to resist guessing.
SECRETS = ("EVOLUTION_API_KEY", "WEBHOOK_TOKEN", "PANEL_PASSWORD", "PANEL_SECRET_KEY", "GEMINI_API_KEY",
           "WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN", "TWILIO_AUTH_TOKEN")
CHOSEN_SECRETS = ("EVOLUTION_API_KEY", "WEBHOOK_TOKEN", "PANEL_PASSWORD")
MIN_SECRET_CHARS = 16
MIN_PANEL_KEY_CHARS = 32
WEAK_PASSWORDS = Path(__file__).resolve().parent / "weak_passwords.txt"  # common passwords and words, one a line

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse(name, text, kind):
    """Turn one environment string into the field's type, or raise SettingsError naming the variable."""
    text = text.strip()
    try:
        if kind is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is tuple:
            return tuple(item.strip().lower() for item in text.split(",") if item.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a {kind.__name__}, got {text!r}") from None
    return text


def _split_send_text_url(url):
    """Read a full sendText URL (the original README's EVOLUTION_API) into (base URL, instance)."""
    match = re.match(r"^(.*?)/message/sendText/([^/?#]+)", url.strip())
    if not match:
        raise SettingsError(f"EVOLUTION_API must look like http://host:8080/message/sendText/<instance>, got {url!r}")
    return match.group(1), unquote(match.group(2))


def load_settings(environ=None, require=("REDIS_URL",)):
    """Build Settings from `environ` (default: os.environ plus `.env`); `require` names what this process needs.

    A process that may reply to customers needs REQUIRED_FOR_REPLYING as well; the webhook needs them
    only in the default REDIS_DOWN=direct mode, because then it answers by itself while Redis is down.
    """
    if environ is None:
        from dotenv import load_dotenv  # here, so `python config.py --init-env` needs only the standard library

        load_dotenv()
        environ = os.environ
    values = {}
    for field in dataclasses.fields(Settings):
        name = field.name.upper()
        raw = environ.get(name)
        if raw is None and name in FALLBACK_NAMES:
            raw = environ.get(FALLBACK_NAMES[name])
        if name in SECRETS and raw and not raw.strip():
            raise SettingsError(f"{name} is only spaces: set a real secret (python3 config.py --init-env) or leave it empty")
        if raw is not None and (raw.strip() or field.type is str):
            values[field.name] = _parse(name, raw, field.type)
    for name in ("redis_down", "bot_active"):
        if name in values:
            values[name] = values[name].strip().lower()

    legacy_url = environ.get("EVOLUTION_API", "").strip()
    if legacy_url and not values.get("evolution_api_url"):
        base, instance = _split_send_text_url(legacy_url)
        values["evolution_api_url"] = base
        values.setdefault("evolution_instance", instance)

    settings = Settings(**values)
    _validate(settings, require)
    return settings


def _validate(settings, require):
    """Stop start-up with one line naming the first setting that is missing or out of range.

    A process that serves the webhook names WEBHOOK_TOKEN in `require`: then an empty token is
    refused unless ALLOW_UNAUTHENTICATED_WEBHOOK=true (a laptop demo), never silently accepted.
    """
    official = _validate_channels(settings)
    for name in require:
        if name == "WEBHOOK_TOKEN" and not settings.webhook_token and settings.allow_unauthenticated_webhook:
            continue
        if name in EVOLUTION_SETTINGS and official and not any(
                getattr(settings, other.lower()) for other in EVOLUTION_SETTINGS):
            continue  # a stack that serves only the Cloud API or Twilio needs no Evolution
        if not str(getattr(settings, name.lower())).strip():
            hint = " (or ALLOW_UNAUTHENTICATED_WEBHOOK=true for a local demo)" if name == "WEBHOOK_TOKEN" else ""
            raise SettingsError(f"{name} is required but not set (see .env.example){hint}")
    _check_secrets(settings)
    _check_panel(settings)
    if settings.evolution_api_url and not re.match(r"^https?://", settings.evolution_api_url):
        raise SettingsError(f"EVOLUTION_API_URL must start with http:// or https://, got {settings.evolution_api_url!r}")
    if settings.redis_down not in ("direct", "retry"):
        raise SettingsError(f"REDIS_DOWN must be 'direct' or 'retry', got {settings.redis_down!r}")
    if settings.log_level.upper() not in logging.getLevelNamesMapping():
        raise SettingsError(f"LOG_LEVEL must be a logging level such as INFO, got {settings.log_level!r}")
    positive = ("debounce_seconds", "dedupe_ttl_seconds", "history_max_turns", "history_max_chars", "history_ttl_days",
                "gemini_max_attempts", "job_lease_seconds", "sweep_seconds", "max_body_bytes",
                "max_input_chars", "max_burst_messages", "gemini_timeout_seconds", "evolution_timeout_seconds",
                "max_wait_seconds", "max_reply_parts", "max_burst_media", "max_burst_media_mb", "log_max_entries")
    for name in positive:
        if getattr(settings, name) < 0 or (name != "debounce_seconds" and getattr(settings, name) == 0):
            raise SettingsError(f"{name.upper()} must be positive, got {getattr(settings, name)!r}")
    if settings.max_typing_ms / 1000 + 5 > settings.evolution_timeout_seconds:
        raise SettingsError("EVOLUTION_TIMEOUT_SECONDS must exceed MAX_TYPING_MS by 5 s: Evolution holds sendText while typing")
    # Each slow step (Gemini, a download, a part's typing and send) renews the lease first, so the lease must outlast the longest.
    if settings.gemini_timeout_seconds + settings.evolution_timeout_seconds >= settings.job_lease_seconds:
        raise SettingsError("JOB_LEASE_SECONDS must be longer than GEMINI_TIMEOUT_SECONDS + EVOLUTION_TIMEOUT_SECONDS")
    if settings.max_regenerations < 0:
        raise SettingsError(f"MAX_REGENERATIONS must be 0 or more, got {settings.max_regenerations!r}")
    _validate_owner_week(settings)


EVOLUTION_SETTINGS = ("EVOLUTION_API_URL", "EVOLUTION_API_KEY")
CHANNEL_SETTINGS = {
    "the WhatsApp Cloud API": ("WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN"),
    "Twilio": ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_WEBHOOK_URL"),
}


def _validate_channels(settings):
    """A channel with none of its settings is off; one with some but not all stops start-up naming what is
    missing. Returns whether any official channel is on."""
    on = False
    for channel, names in CHANNEL_SETTINGS.items():
        missing = [name for name in names if not getattr(settings, name.lower()).strip()]
        if missing and len(missing) < len(names):
            raise SettingsError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required for {channel} "
                                f"({', '.join(name for name in names if name not in missing)} set; see .env.example)")
        on = on or not missing
    for name in ("WHATSAPP_GRAPH_URL", "TWILIO_API_URL", "TWILIO_WEBHOOK_URL"):
        value = getattr(settings, name.lower())
        if value and not re.match(r"^https?://", value):
            raise SettingsError(f"{name} must start with https:// (or http://), got {value!r}")
    if not re.fullmatch(r"v\d+\.\d+", settings.whatsapp_api_version.strip()):
        raise SettingsError(f"WHATSAPP_API_VERSION must look like v23.0, got {settings.whatsapp_api_version!r}")
    return on


def _check_secrets(settings):
    """Refuse placeholder secrets and short ones the shop chose; empty ones are left to `require`."""
    checks = [(name, getattr(settings, name.lower()), name in CHOSEN_SECRETS) for name in SECRETS]
    checks.append(("REDIS_URL's password (REDIS_PASSWORD in .env)", redis_password(settings.redis_url), True))
    for name, value, chosen in checks:
        if value and value.lower().startswith("change-me"):
            raise SettingsError(f"{name} is still the placeholder from .env.example: run python3 config.py --init-env")
        if value and chosen and len(value) < MIN_SECRET_CHARS:
            raise SettingsError(f"{name} is shorter than {MIN_SECRET_CHARS} characters: use a long random one "
                                "(python3 config.py --init-env)")


def _check_panel(settings):
    """With the panel on: its own random signing key, a password not guessable by a list, a valid TRUSTED_PROXY."""
    import ipaddress

    for value in settings.trusted_proxy:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise SettingsError(f"TRUSTED_PROXY: {value!r} não é um endereço IP nem uma rede; "
                                "exemplo: TRUSTED_PROXY=127.0.0.1 (o nginx na mesma máquina)") from None
    if settings.panel_max_failed_logins_per_hour <= 0:
        raise SettingsError("PANEL_MAX_FAILED_LOGINS_PER_HOUR precisa ser maior que zero; exemplo: "
                            "PANEL_MAX_FAILED_LOGINS_PER_HOUR=100")
    if not settings.panel_password:
        return
    if len(settings.panel_secret_key.strip()) < MIN_PANEL_KEY_CHARS:
        raise SettingsError(f"PANEL_SECRET_KEY falta ou tem menos de {MIN_PANEL_KEY_CHARS} caracteres (o painel está "
                            "ligado): rode python3 config.py --init-env, que cria uma; exemplo: "
                            "PANEL_SECRET_KEY=9f2c4e...(48 caracteres hexadecimais aleatórios)")
    if settings.panel_secret_key in (settings.panel_password, settings.webhook_token, settings.evolution_api_key):
        raise SettingsError("PANEL_SECRET_KEY não pode ser igual a outro segredo: rode python3 config.py --init-env "
                            "depois de apagar a linha PANEL_SECRET_KEY do .env")
    weakness = password_weakness(settings.panel_password, settings.evolution_instance)
    if weakness:
        raise SettingsError(f"PANEL_PASSWORD é fraca ({weakness}): use uma senha longa e aleatória, por exemplo a "
                            "que python3 config.py --init-env cria quando a linha PANEL_PASSWORD está vazia")


def password_weakness(password, instance=""):
    """Why a panel password would fall to a guessing list (in pt-BR, for the start-up error), or ""."""
    lower = password.lower()
    if len(set(lower)) <= 2 or any(lower == lower[:n] * (len(lower) // n) + lower[:len(lower) % n]
                                   for n in range(1, 5)):
        return "é um mesmo trecho curto repetido"
    instance = instance.strip().lower()
    if len(instance) >= 3 and instance in lower:
        return "contém o nome da instância"
    letters = re.sub(r"[^a-z]", "", lower)
    words = {line.strip().lower() for line in WEAK_PASSWORDS.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")}
    if lower in words or re.sub(r"[^a-z0-9]", "", lower) in words:
        return "está numa lista de senhas comuns"
    if not letters or any(letters == word * (len(letters) // len(word)) for word in words if len(word) >= 3
                          and len(letters) % len(word) == 0) or letters in words:
        return "é uma palavra comum com números"
    return ""


def redis_password(url):
    """The password inside a Redis URL (`redis://:PASSWORD@host:6379/0` or `?password=`), or ""."""
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else ""
    return password or parse_qs(parts.query).get("password", [""])[0]


def _validate_owner_week(settings):
    """Business hours, BOT_ACTIVE and the Gemini limits: one line naming the setting when one is wrong."""
    import hours

    try:
        hours.parse_business_hours(settings.business_hours)
    except ValueError as error:
        raise SettingsError(f"BUSINESS_HOURS: {error}") from None
    try:
        hours.timezone(settings.business_timezone)
    except ValueError as error:
        raise SettingsError(f"BUSINESS_TIMEZONE: {error}") from None
    if settings.bot_active not in hours.BOT_ACTIVE_CHOICES:
        raise SettingsError(f"BOT_ACTIVE must be one of {', '.join(hours.BOT_ACTIVE_CHOICES)}, got {settings.bot_active!r}")
    if settings.bot_active != "always" and not settings.business_hours.strip():
        raise SettingsError(f"BUSINESS_HOURS is required when BOT_ACTIVE={settings.bot_active}")
    if settings.gemini_max_output_tokens <= 0:
        raise SettingsError(f"GEMINI_MAX_OUTPUT_TOKENS must be positive, got {settings.gemini_max_output_tokens!r}")
    if settings.gemini_thinking_budget < -1:
        raise SettingsError(f"GEMINI_THINKING_BUDGET must be -1 (model default), 0 (off) or a number of tokens, "
                            f"got {settings.gemini_thinking_budget!r}")


def setup_logging(settings):
    """One log format for the webhook and the worker: time, level, module, message."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpx2", "urllib3"):  # one line per HTTP call, with URLs: not worth INFO
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    import chat_ids

    chat_ids.install(settings)  # chat ids in log lines are keyed, never the plain hash


# --- python3 config.py --init-env ----------------------------------------------------------------

# Filled by --init-env. REDIS_PASSWORD and EVOLUTION_DB_PASSWORD are read by docker-compose.yml only.
GENERATED_SECRETS = ("EVOLUTION_API_KEY", "WEBHOOK_TOKEN", "PANEL_PASSWORD", "PANEL_SECRET_KEY", "REDIS_PASSWORD",
                     "EVOLUTION_DB_PASSWORD")


def init_env(env_path=".env", example_path=".env.example"):
    """Write a strong random value for each empty or `change-me…` secret in `.env`; returns the names filled.

    `.env` is made from `.env.example` when missing. Values already chosen are kept. Hex values: safe
    in URLs (WEBHOOK_TOKEN, REDIS_PASSWORD), connection URIs and command lines.
    """
    env_path, example_path = Path(env_path), Path(example_path)
    text = env_path.read_text() if env_path.exists() else example_path.read_text()
    lines = text.splitlines()
    filled = []
    for name in GENERATED_SECRETS:
        pattern = re.compile(rf"^\s*(export\s+)?{name}\s*=(.*)$")
        value = secrets.token_hex(24)
        found = False
        for index, line in enumerate(lines):
            match = pattern.match(line)
            if not match:
                continue
            found = True
            current = match.group(2).strip().strip("'\"").strip()
            if not current or current.lower().startswith("change-me"):
                lines[index] = f"{name}={value}"
                filled.append(name)
        if not found:
            lines.append(f"{name}={value}")
            filled.append(name)
    if not filled and env_path.exists():
        return []
    temporary = env_path.with_name(env_path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # secrets: owner only
    with os.fdopen(descriptor, "w") as file:
        file.write("\n".join(lines) + "\n")
    os.replace(temporary, env_path)
    return list(dict.fromkeys(filled))


def main(argv):
    """`python3 config.py --init-env [path]`: fill the secrets of `.env` (next to this file by default)."""
    if not argv or argv[0] != "--init-env" or len(argv) > 2:
        print("usage: python3 config.py --init-env [path/to/.env]", file=sys.stderr)
        return 2
    here = Path(__file__).resolve().parent
    env_path = Path(argv[1]) if len(argv) > 1 else here / ".env"
    filled = init_env(env_path, here / ".env.example")
    if filled:
        print(f"{env_path}: wrote random values for {', '.join(filled)}.")
    else:
        print(f"{env_path}: every secret already has a value; nothing changed.")
    print("The values are in that file (readable by you only). The Evolution manager login is EVOLUTION_API_KEY;"
          " the panel login is PANEL_PASSWORD. Set GEMINI_API_KEY there yourself.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
