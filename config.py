"""Every setting of the bot, read once from the environment (and `.env`) into one frozen object.

All defaults live here, in the dataclass below, so there is one place to look them up.
"""

import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from urllib.parse import unquote

from dotenv import load_dotenv

PT_FALLBACK = "Desculpe, tive um probleminha para responder agora. Uma pessoa da nossa equipe vai te responder em breve."
PT_HANDOFF = "Certo! Vou chamar uma pessoa da nossa equipe para falar com você. Aguarde um instante, por favor."
PT_OPTOUT = "Tudo bem, não vou mais enviar mensagens automáticas. Se precisar, é só escrever de novo."
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
    history_ttl_days: float = 7.0
    max_message_age_seconds: int = 600

    # Webhook
    webhook_token: str = ""
    max_body_bytes: int = 16 * 1024 * 1024
    redis_down: str = "direct"
    direct_reply_threads: int = 4

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
    rate_limit_per_hour: int = 60

    # Who the bot talks to
    reply_to_groups: bool = False
    ignore_numbers: tuple = ()
    only_numbers: tuple = ()
    trigger_keywords: tuple = ()
    session_expire_minutes: float = 60.0

    # Human handoff and opt-out
    handoff_pause_minutes: float = 60.0
    handoff_keywords: tuple = ("atendente", "humano", "pessoa")
    handoff_message: str = PT_HANDOFF
    resume_keyword: str = "#bot"
    stop_keyword: str = "#parar"
    optout_keywords: tuple = ("sair", "parar")
    optout_days: float = 30.0
    optout_message: str = PT_OPTOUT

    # Feels like a person
    send_presence: bool = True
    mark_read: bool = True
    split_messages: bool = True
    time_per_char_ms: int = 30
    max_typing_ms: int = 4000
    unknown_message: str = ""

    # Media
    max_media_mb: float = 10.0
    max_media_seconds: int = 600
    media_too_large_message: str = PT_MEDIA_TOO_LARGE
    media_failed_message: str = PT_MEDIA_FAILED

    log_level: str = "INFO"

    # --- The owner's first week (issue 13): business hours, alerts to the owner, Gemini limits ---
    business_hours: str = ""  # e.g. "mon-fri 08:00-18:00, sat 08:00-12:00" (seg…dom too); see hours.py
    business_timezone: str = "America/Sao_Paulo"
    bot_active: str = "always"  # always · outside_business_hours · during_business_hours
    closed_message: str = ""  # sent once per chat per day while the bot is off; empty: stay silent
    owner_number: tuple = ()  # numbers that get WhatsApp alerts (handoff, fallback, a number unlinked)
    gemini_max_output_tokens: int = 1024
    gemini_thinking_budget: int = 0  # 0: no thinking (short answers, faster, cheaper); -1: the model's default

    @property
    def history_ttl_seconds(self) -> int:
        return int(self.history_ttl_days * 86400)


# Names from the original README that still work when the new name is not set.
FALLBACK_NAMES = {
    "REDIS_URL": "CACHE_REDIS_URI",
    "EVOLUTION_API_KEY": "AUTHENTICATION_API_KEY",
}

REQUIRED_FOR_REPLYING = ("EVOLUTION_API_URL", "EVOLUTION_API_KEY", "GEMINI_API_KEY")

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
        load_dotenv()
        environ = os.environ
    values = {}
    for field in dataclasses.fields(Settings):
        name = field.name.upper()
        raw = environ.get(name)
        if raw is None and name in FALLBACK_NAMES:
            raw = environ.get(FALLBACK_NAMES[name])
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
    """Stop start-up with one line naming the first setting that is missing or out of range."""
    for name in require:
        if not str(getattr(settings, name.lower())).strip():
            raise SettingsError(f"{name} is required but not set (see .env.example)")
    if settings.evolution_api_url and not re.match(r"^https?://", settings.evolution_api_url):
        raise SettingsError(f"EVOLUTION_API_URL must start with http:// or https://, got {settings.evolution_api_url!r}")
    if settings.redis_down not in ("direct", "retry"):
        raise SettingsError(f"REDIS_DOWN must be 'direct' or 'retry', got {settings.redis_down!r}")
    if settings.log_level.upper() not in logging.getLevelNamesMapping():
        raise SettingsError(f"LOG_LEVEL must be a logging level such as INFO, got {settings.log_level!r}")
    positive = ("debounce_seconds", "dedupe_ttl_seconds", "history_max_turns", "history_ttl_days",
                "gemini_max_attempts", "job_lease_seconds", "sweep_seconds", "max_body_bytes",
                "max_input_chars", "max_burst_messages", "gemini_timeout_seconds", "evolution_timeout_seconds")
    for name in positive:
        if getattr(settings, name) < 0 or (name != "debounce_seconds" and getattr(settings, name) == 0):
            raise SettingsError(f"{name.upper()} must be positive, got {getattr(settings, name)!r}")
    if settings.max_typing_ms / 1000 + 5 > settings.evolution_timeout_seconds:
        raise SettingsError("EVOLUTION_TIMEOUT_SECONDS must exceed MAX_TYPING_MS by 5 s: Evolution holds sendText while typing")
    if settings.gemini_timeout_seconds + settings.evolution_timeout_seconds >= settings.job_lease_seconds:
        raise SettingsError("JOB_LEASE_SECONDS must be longer than GEMINI_TIMEOUT_SECONDS + EVOLUTION_TIMEOUT_SECONDS")
    _validate_owner_week(settings)


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
