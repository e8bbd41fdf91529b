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
PT_FOLLOWUP_PROMPT = ("(O cliente não respondeu à sua última mensagem. Escreva uma única mensagem curta e gentil "
                      "retomando a conversa a partir do que foi falado, sem repetir o que você já disse e sem pressionar.)")
PT_MEDIA_FAILED = "Não consegui abrir o arquivo que você enviou. Pode me contar por texto o que precisa?"


class SettingsError(Exception):
    """A required setting is missing or a setting cannot be parsed.

    The message is one pt-BR line for the shop owner: the setting's name first, what is wrong, and
    an example of a right value (`refuse` builds it).
    """


def refuse(name, problem, example):
    """The SettingsError for `name`: "NAME: problem. Exemplo: NAME=example" (one line, pt-BR)."""
    return SettingsError(f"{name}: {problem}. Exemplo: {name}={example}")


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
    history_max_chars: int = 6000  # Gemini's window (UTF-8 bytes as stored); a chat's record stays under twice it
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
    worker_concurrency: int = 200  # chats one `python worker.py` answers at once (threads); see docs/operations.md
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
    split_messages: bool = True  # Evolution; the official channels have their own (each part is a paid message there)
    split_messages_cloud: bool = False
    split_messages_twilio: bool = False
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
    log_max_entries: int = 500  # most messages per chat the record keeps for the panel (its byte caps bind first)

    # --- The owner's first week (issue 13): business hours, alerts to the owner, Gemini limits ---
    business_hours: str = ""  # e.g. "mon-fri 08:00-18:00, sat 08:00-12:00" (seg…dom too); see hours.py
    business_timezone: str = "America/Sao_Paulo"
    bot_active: str = "always"  # always · outside_business_hours · during_business_hours
    bot_paused: bool = False  # the owner's switch (panel's Configurações): no customer answered, messages still kept
    closed_message: str = ""  # sent once per chat per day while the bot is off; empty: stay silent
    owner_number: tuple = ()  # numbers that get WhatsApp alerts (handoff, fallback, a number unlinked)
    gemini_max_output_tokens: int = 1024
    gemini_thinking_budget: int = 0  # 0: no thinking (short answers, faster, cheaper); -1: the model's default

    # --- What the shop knows (issue 23): knowledge.py, gemini_cache.py, learn.py ---
    gemini_cache_min_tokens: int = 0  # 0: the model's minimum for context caching (1,024 Flash, 4,096 Pro); -1: off
    gemini_cache_ttl_minutes: float = 60.0  # how long Gemini keeps the cached persona + knowledge (renewed at half)
    learn_from_handoffs: bool = True  # after a person answers a handed-over chat, suggest a Q&A for the knowledge

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

    # --- Beyond answering (issue 24): events out, voice replies, a follow-up after silence; all off by default ---
    events_url: str = ""  # where JSON events are POSTed (n8n's Webhook node, a CRM); empty: no events
    events_secret: str = ""  # signs each event (X-Signature-256) and keys the chat id receivers see
    events_include_number: bool = False  # the customer's number in each event (LGPD: only if the receiver needs it)
    events_retry_hours: float = 24.0  # a failing event is retried with backoff this long, then dead-lettered
    voice_replies: str = "off"  # off · when_customer_sends_audio · always (voice.py; Evolution only)
    voice_name: str = "Kore"  # one of the TTS models' prebuilt voices
    voice_max_chars: int = 600  # longer answers go out as text
    voice_model: str = "gemini-3.8-flash-lite-tts"
    followup_after_minutes: float = 0.0  # a nudge this long after the bot's reply when the customer is silent; 0: off
    followup_max: int = 1  # follow-ups per silence
    followup_prompt: str = PT_FOLLOWUP_PROMPT  # what Gemini is told when it writes the nudge
    followup_message: str = ""  # a fixed nudge instead of Gemini's
    followup_template: str = ""  # Cloud API, outside the 24 h window: an approved template, "name:language"

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

MAX_WORKER_CONCURRENCY = 1000  # threads of one worker process; more processes scale further

REQUIRED_FOR_REPLYING = ("EVOLUTION_API_URL", "EVOLUTION_API_KEY", "GEMINI_API_KEY")

# Secrets: none may be a `change-me…` placeholder or only spaces. The shop chooses the ones in
# CHOSEN_SECRETS (Google issues the Gemini key), so those must also be long enough to resist guessing.
SECRETS = ("EVOLUTION_API_KEY", "WEBHOOK_TOKEN", "PANEL_PASSWORD", "PANEL_SECRET_KEY", "GEMINI_API_KEY",
           "WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN", "TWILIO_AUTH_TOKEN", "EVENTS_SECRET")
CHOSEN_SECRETS = ("EVOLUTION_API_KEY", "WEBHOOK_TOKEN", "PANEL_PASSWORD", "EVENTS_SECRET")
MIN_SECRET_CHARS = 16
MIN_PANEL_KEY_CHARS = 32
WEAK_PASSWORDS = Path(__file__).resolve().parent / "weak_passwords.txt"  # common passwords and words, one a line

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse(name, text, kind, default=None):
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
        if kind is bool:
            raise refuse(name, f"use true ou false, veio {text!r}", "true" if default else "false") from None
        what = "um número inteiro" if kind is int else "um número (decimais com ponto: 2.5)"
        raise refuse(name, f"precisa ser {what}, veio {text!r}", _number(default)) from None
    return text


def _split_send_text_url(url):
    """Read a full sendText URL (the original README's EVOLUTION_API) into (base URL, instance)."""
    match = re.match(r"^(.*?)/message/sendText/([^/?#]+)", url.strip())
    if not match:
        raise refuse("EVOLUTION_API", f"precisa ser o endereço completo do sendText, veio {url!r}",
                     "http://evolution:8080/message/sendText/loja")
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
            raise refuse(name, "só tem espaços; rode python3 config.py --init-env, que põe uma senha longa",
                         SECRET_EXAMPLE)
        if raw is not None and (raw.strip() or field.type is str):
            values[field.name] = _parse(name, raw, field.type, field.default)
    for name in ("redis_down", "bot_active", "voice_replies"):
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


def with_values(settings, strings):
    """`settings` with some fields given as environment strings ({"debounce_seconds": "30"}), checked as at start-up.

    The panel's settings (shop_settings.py) go through here, so they meet the same validators as `.env`;
    raises SettingsError naming the first wrong one.
    """
    fields = {field.name: field for field in dataclasses.fields(Settings)}
    values = {name: _parse(name.upper(), text, fields[name].type, fields[name].default) for name, text in strings.items()}
    for name in ("redis_down", "bot_active"):
        if name in values:
            values[name] = values[name].strip().lower()
    changed = dataclasses.replace(settings, **values)
    _validate(changed, require=())
    return changed


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
            problem = "falta no .env"
            if name == "WEBHOOK_TOKEN":
                problem += " (ALLOW_UNAUTHENTICATED_WEBHOOK=true liga sem ele, só para teste no seu computador)"
            raise refuse(name, problem, REQUIRED_EXAMPLES.get(name, SECRET_EXAMPLE))
    _check_secrets(settings)
    _check_panel(settings)
    if settings.evolution_api_url and not re.match(r"^https?://", settings.evolution_api_url):
        raise refuse("EVOLUTION_API_URL", f"precisa começar com http:// ou https://, veio {settings.evolution_api_url!r}",
                     "http://evolution:8080")
    if settings.redis_down not in ("direct", "retry"):
        raise refuse("REDIS_DOWN", f"use direct ou retry, veio {settings.redis_down!r}", "direct")
    if settings.log_level.upper() not in logging.getLevelNamesMapping():
        raise refuse("LOG_LEVEL", f"use DEBUG, INFO, WARNING ou ERROR, veio {settings.log_level!r}", "INFO")
    positive = ("debounce_seconds", "dedupe_ttl_seconds", "history_max_turns", "history_max_chars", "history_ttl_days",
                "gemini_max_attempts", "job_lease_seconds", "sweep_seconds", "max_body_bytes",
                "max_input_chars", "max_burst_messages", "gemini_timeout_seconds", "evolution_timeout_seconds",
                "max_wait_seconds", "max_reply_parts", "max_burst_media", "max_burst_media_mb", "log_max_entries",
                "handoff_pause_minutes")
    zero_ok = ("debounce_seconds", "handoff_pause_minutes")
    for name in positive:
        value = getattr(settings, name)
        if value < 0 or (name not in zero_ok and value == 0):
            least = "0 ou mais" if name in zero_ok else "maior que zero"
            raise refuse(name.upper(), f"precisa ser {least}, veio {_number(value)}", _number(_default(name)))
    if settings.max_typing_ms / 1000 + 5 > settings.evolution_timeout_seconds:
        raise refuse("EVOLUTION_TIMEOUT_SECONDS", f"precisa passar MAX_TYPING_MS ({settings.max_typing_ms} ms) em 5 "
                     "segundos, porque o Evolution segura o envio enquanto mostra digitando",
                     _number(settings.max_typing_ms / 1000 + 10))
    # Each slow step (Gemini, a download, a part's typing and send) renews the lease first, so the lease must outlast the longest.
    slowest = settings.gemini_timeout_seconds + settings.evolution_timeout_seconds
    if slowest >= settings.job_lease_seconds:
        raise refuse("JOB_LEASE_SECONDS", f"precisa ser maior que GEMINI_TIMEOUT_SECONDS + EVOLUTION_TIMEOUT_SECONDS "
                     f"({_number(slowest)} segundos)", _number(max(_default("job_lease_seconds"), slowest + 30)))
    if not 1 <= settings.worker_concurrency <= MAX_WORKER_CONCURRENCY:
        raise refuse("WORKER_CONCURRENCY", f"precisa ser de 1 a {MAX_WORKER_CONCURRENCY} (conversas atendidas ao "
                     f"mesmo tempo por processo do worker), veio {settings.worker_concurrency}",
                     _number(_default("worker_concurrency")))
    if settings.max_regenerations < 0:
        raise refuse("MAX_REGENERATIONS", f"precisa ser 0 ou mais, veio {settings.max_regenerations}", "1")
    _validate_owner_week(settings)
    _validate_knowledge(settings)


def _validate_knowledge(settings):
    """The context cache's settings (issue 23)."""
    if settings.gemini_cache_min_tokens < -1:
        raise refuse("GEMINI_CACHE_MIN_TOKENS", "precisa ser 0 (o mínimo do modelo), -1 (nunca) ou um número de tokens, "
                     f"veio {settings.gemini_cache_min_tokens}", "0")
    if not 1 <= settings.gemini_cache_ttl_minutes <= 7 * 24 * 60:
        raise refuse("GEMINI_CACHE_TTL_MINUTES", f"precisa ser de 1 a 10080 minutos, veio {settings.gemini_cache_ttl_minutes:g}",
                     "60")
    _validate_beyond(settings)


def _validate_beyond(settings):
    """Events, voice replies and the follow-up (issue 24): one Portuguese line naming the setting and a right value."""
    import voice

    if settings.events_url and not re.match(r"^https?://", settings.events_url):
        raise refuse("EVENTS_URL", f"precisa começar com https:// (ou http://), veio {settings.events_url!r}",
                     "https://n8n.exemplo.com.br/webhook/whatsapp")
    if settings.events_url and not settings.events_secret:
        raise refuse("EVENTS_SECRET", "precisa ser preenchido com EVENTS_URL: um texto aleatório longo, que o receptor "
                     "usa para conferir a assinatura", "$(openssl rand -hex 24)")
    if settings.events_retry_hours <= 0:
        raise refuse("EVENTS_RETRY_HOURS", f"precisa ser maior que zero (em horas), veio {settings.events_retry_hours!r}",
                     "24")
    if settings.voice_replies not in voice.MODES:
        raise refuse("VOICE_REPLIES", f"precisa ser {', '.join(map(repr, voice.MODES))}, veio {settings.voice_replies!r}",
                     "when_customer_sends_audio")
    if settings.voice_max_chars <= 0:
        raise refuse("VOICE_MAX_CHARS", f"precisa ser maior que zero, veio {settings.voice_max_chars!r}", "600")
    for name, example in (("VOICE_NAME", "Kore"), ("VOICE_MODEL", "gemini-3.8-flash-lite-tts")):
        if settings.voice_replies != "off" and not getattr(settings, name.lower()).strip():
            raise refuse(name, "não pode ficar vazio com VOICE_REPLIES ligado", example)
    if settings.followup_after_minutes < 0:
        raise refuse("FOLLOWUP_AFTER_MINUTES", f"precisa ser 0 (desligado) ou mais, veio "
                     f"{settings.followup_after_minutes!r}", "60")
    if settings.followup_max < 1:
        raise refuse("FOLLOWUP_MAX", f"precisa ser 1 ou mais, veio {settings.followup_max!r}", "1")
    if settings.followup_after_minutes and not (settings.followup_message.strip() or settings.followup_prompt.strip()):
        raise refuse("FOLLOWUP_MESSAGE", "precisa de um texto (ou FOLLOWUP_PROMPT) com FOLLOWUP_AFTER_MINUTES ligado",
                     "Ainda posso te ajudar com alguma coisa?")
    if settings.followup_template and not re.fullmatch(r"[a-z0-9_]+:[A-Za-z]{2,3}(_[A-Za-z]{2,4})?",
                                                       settings.followup_template.strip()):
        raise refuse("FOLLOWUP_TEMPLATE", f"precisa ser nome:idioma de um modelo aprovado pela Meta, veio "
                     f"{settings.followup_template!r}", "retomar_conversa:pt_BR")


def _default(name):
    """A field's default, for the example of a right value."""
    return Settings.__dataclass_fields__[name].default


def _number(value):
    """120.0 → "120", 2.5 → "2.5": how the owner would write it in .env."""
    return str(int(value)) if float(value).is_integer() else str(value)


# Examples of right values in the refusals (pt-BR, one line each).
SECRET_EXAMPLE = "9f2c4e7a1b8d3f60c5e2a7b9d4f1c8e3 (o python3 config.py --init-env cria)"
REQUIRED_EXAMPLES = {
    "REDIS_URL": "redis://localhost:6379/0",
    "EVOLUTION_API_URL": "http://evolution:8080",
    "GEMINI_API_KEY": "AIzaSy... (crie a chave em https://aistudio.google.com/apikey)",
}

EVOLUTION_SETTINGS = ("EVOLUTION_API_URL", "EVOLUTION_API_KEY")
CHANNEL_SETTINGS = {
    "a API oficial da Meta (Cloud API)": ("WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN"),
    "a Twilio": ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_WEBHOOK_URL"),
}
CHANNEL_EXAMPLES = {
    "WHATSAPP_TOKEN": "EAAG... (token permanente de um usuário do sistema, na Meta)",
    "WHATSAPP_APP_SECRET": "1a2b3c4d5e6f... (a chave secreta do app, na Meta: Configurações do app, Básico)",
    "WHATSAPP_VERIFY_TOKEN": "um-texto-longo-que-voce-escolhe",
    "TWILIO_ACCOUNT_SID": "AC... (Twilio: Account info)",
    "TWILIO_AUTH_TOKEN": "9f8e7d6c5b4a... (o Auth Token, na Twilio: Account info)",
    "TWILIO_WEBHOOK_URL": "https://bot.minhaloja.com.br/webhook/twilio",
    "WHATSAPP_GRAPH_URL": "https://graph.facebook.com",
    "TWILIO_API_URL": "https://api.twilio.com",
}


def _validate_channels(settings):
    """A channel with none of its settings is off; one with some but not all stops start-up naming what is
    missing. Returns whether any official channel is on."""
    on = False
    for channel, names in CHANNEL_SETTINGS.items():
        missing = [name for name in names if not getattr(settings, name.lower()).strip()]
        if missing and len(missing) < len(names):
            given = ", ".join(name for name in names if name not in missing)
            raise SettingsError(f"{', '.join(missing)}: {'falta' if len(missing) == 1 else 'faltam'} para usar {channel} "
                                f"({given} já no .env). Exemplo: {missing[0]}={CHANNEL_EXAMPLES[missing[0]]}")
        on = on or not missing
    for name in ("WHATSAPP_GRAPH_URL", "TWILIO_API_URL", "TWILIO_WEBHOOK_URL"):
        value = getattr(settings, name.lower())
        if value and not re.match(r"^https?://", value):
            raise refuse(name, f"precisa começar com https:// (ou http://), veio {value!r}", CHANNEL_EXAMPLES[name])
    if not re.fullmatch(r"v\d+\.\d+", settings.whatsapp_api_version.strip()):
        raise refuse("WHATSAPP_API_VERSION", f"precisa ser como v23.0, veio {settings.whatsapp_api_version!r}", "v23.0")
    return on


def _check_secrets(settings):
    """Refuse placeholder secrets and short ones the shop chose; empty ones are left to `require`."""
    checks = [(name, getattr(settings, name.lower()), name in CHOSEN_SECRETS) for name in SECRETS]
    checks.append(("REDIS_PASSWORD", redis_password(settings.redis_url), True))
    for name, value, chosen in checks:
        where = " (a senha dentro de REDIS_URL)" if name == "REDIS_PASSWORD" else ""
        if value and value.lower().startswith("change-me"):
            raise SettingsError(f"{name}{where}: ainda é o valor de exemplo do .env.example; rode python3 config.py "
                                f"--init-env, que põe uma senha longa. Exemplo: {name}={SECRET_EXAMPLE}")
        if value and chosen and len(value) < MIN_SECRET_CHARS:
            raise SettingsError(f"{name}{where}: curta demais (menos de {MIN_SECRET_CHARS} letras e números); rode "
                                f"python3 config.py --init-env, que põe uma longa. Exemplo: {name}={SECRET_EXAMPLE}")


def _check_panel(settings):
    """With the panel on: its own random signing key, a password not guessable by a list, a valid TRUSTED_PROXY."""
    import ipaddress

    for value in settings.trusted_proxy:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise refuse("TRUSTED_PROXY", f"{value!r} não é um endereço IP nem uma rede",
                         "127.0.0.1 (o nginx na mesma máquina)") from None
    if settings.panel_max_failed_logins_per_hour <= 0:
        raise refuse("PANEL_MAX_FAILED_LOGINS_PER_HOUR", "precisa ser maior que zero", "100")
    if not settings.panel_password:
        return
    if len(settings.panel_secret_key.strip()) < MIN_PANEL_KEY_CHARS:
        raise refuse("PANEL_SECRET_KEY", f"falta ou tem menos de {MIN_PANEL_KEY_CHARS} caracteres (o painel está ligado); "
                     "rode python3 config.py --init-env, que cria uma", SECRET_EXAMPLE)
    if settings.panel_secret_key in (settings.panel_password, settings.webhook_token, settings.evolution_api_key):
        raise refuse("PANEL_SECRET_KEY", "não pode ser igual a outro segredo; apague a linha dela no .env e rode "
                     "python3 config.py --init-env", SECRET_EXAMPLE)
    weakness = password_weakness(settings.panel_password, settings.evolution_instance)
    if weakness:
        raise refuse("PANEL_PASSWORD", f"fraca ({weakness}); use uma senha longa e aleatória (apague a linha e rode "
                     "python3 config.py --init-env, que cria uma)", SECRET_EXAMPLE)


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
        raise refuse("BUSINESS_HOURS", str(error), HOURS_EXAMPLE) from None
    try:
        hours.timezone(settings.business_timezone)
    except ValueError as error:
        raise refuse("BUSINESS_TIMEZONE", str(error), "America/Sao_Paulo") from None
    if settings.bot_active not in hours.BOT_ACTIVE_CHOICES:
        raise refuse("BOT_ACTIVE", f"use {', '.join(hours.BOT_ACTIVE_CHOICES[:-1])} ou {hours.BOT_ACTIVE_CHOICES[-1]}, "
                     f"veio {settings.bot_active!r}", "outside_business_hours")
    if settings.bot_active != "always" and not settings.business_hours.strip():
        raise refuse("BUSINESS_HOURS", f"precisa ser preenchido quando BOT_ACTIVE={settings.bot_active}", HOURS_EXAMPLE)
    for number in settings.owner_number:
        if not 10 <= len(re.sub(r"[\s()+-]", "", number)) <= 15 or not re.fullmatch(r"[\d\s()+-]+", number):
            raise refuse("OWNER_NUMBER", f"{number!r} não é um número de WhatsApp com DDI e DDD",
                         "5511999998888 (vários: separe com vírgula)")
    if settings.gemini_max_output_tokens <= 0:
        raise refuse("GEMINI_MAX_OUTPUT_TOKENS", f"precisa ser maior que zero, veio {settings.gemini_max_output_tokens}",
                     "1024")
    if settings.gemini_thinking_budget < -1:
        raise refuse("GEMINI_THINKING_BUDGET", "use -1 (o padrão do modelo), 0 (sem pensar) ou um número de tokens, "
                     f"veio {settings.gemini_thinking_budget}", "0")


HOURS_EXAMPLE = "seg-sex 08:00-18:00, sab 08:00-12:00"


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
GEMINI_KEY_PAGE = "https://aistudio.google.com/apikey"


def _env_line(name):
    return re.compile(rf"^\s*(export\s+)?{name}\s*=(.*)$")


def _unset(value):
    value = value.strip().strip("'\"").strip()
    return not value or value.lower().startswith("change-me")


def env_value(env_path, name):
    """The value `.env` gives `name` ("" when the file or the line is missing)."""
    env_path = Path(env_path)
    for line in env_path.read_text().splitlines() if env_path.exists() else ():
        match = _env_line(name).match(line)
        if match:
            return match.group(2).strip().strip("'\"").strip()
    return ""


def init_env(env_path=".env", example_path=".env.example", gemini_key=""):
    """Write a strong random value for each empty or `change-me…` secret in `.env`; returns the names filled.

    `.env` is made from `.env.example` when missing. Values already chosen are kept; `gemini_key`, when
    given, is written as GEMINI_API_KEY (the owner pasted it just now). Hex values: safe in URLs
    (WEBHOOK_TOKEN, REDIS_PASSWORD), connection URIs and command lines.
    """
    env_path, example_path = Path(env_path), Path(example_path)
    text = env_path.read_text() if env_path.exists() else example_path.read_text()
    lines = text.splitlines()
    wanted = {name: secrets.token_hex(24) for name in GENERATED_SECRETS}
    if gemini_key:
        wanted["GEMINI_API_KEY"] = gemini_key
    filled = []
    for name, value in wanted.items():
        found = False
        for index, line in enumerate(lines):
            match = _env_line(name).match(line)
            if not match:
                continue
            found = True
            if _unset(match.group(2)) or (name == "GEMINI_API_KEY" and match.group(2).strip() != value):
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


def ask_gemini_key(stdin=sys.stdin):
    """The key the owner pastes: asked on a terminal, else the first line of standard input ("" when none)."""
    if stdin.isatty():
        print(f"Cole a chave do Gemini (crie em {GEMINI_KEY_PAGE}) e tecle Enter; vazio para pular:")
        try:
            return input("GEMINI_API_KEY = ").strip()
        except EOFError:
            return ""
    return stdin.readline().strip()


def main(argv):
    """`python3 config.py --init-env [--gemini-key KEY] [path]`: fill `.env`'s secrets and the Gemini key."""
    args = list(argv)
    gemini_key = None
    if "--gemini-key" in args:
        at = args.index("--gemini-key")
        if at + 1 >= len(args):
            args = []  # --gemini-key without its value: print the usage
        else:
            gemini_key = args.pop(at + 1).strip()
            args.pop(at)
    if not args or args[0] != "--init-env" or len(args) > 2:
        print("uso: python3 config.py --init-env [--gemini-key SUA_CHAVE] [caminho/do/.env]", file=sys.stderr)
        return 2
    here = Path(__file__).resolve().parent
    env_path = Path(args[1]) if len(args) > 1 else here / ".env"
    if gemini_key is None and _unset(env_value(env_path, "GEMINI_API_KEY")):
        gemini_key = ask_gemini_key()
    if gemini_key and not re.fullmatch(r"[A-Za-z0-9_-]{20,}", gemini_key):
        print("erro: GEMINI_API_KEY: essa chave não parece uma chave do Google (só letras, números, - e _, como "
              f"AIzaSy…). Copie de novo em {GEMINI_KEY_PAGE}; nada foi mudado.", file=sys.stderr)
        return 2
    filled = init_env(env_path, here / ".env.example", gemini_key or "")
    generated = [name for name in filled if name != "GEMINI_API_KEY"]
    if generated:
        print(f"{env_path}: criei senhas aleatórias para {', '.join(generated)}.")
    else:
        print(f"{env_path}: as senhas já estavam preenchidas; não mudei nenhuma.")
    print(f"Elas ficam nesse arquivo, que só você pode ler. A senha do painel é PANEL_PASSWORD (veja com: "
          f"grep PANEL_PASSWORD {env_path}).")
    if "GEMINI_API_KEY" in filled:
        print("A chave do Gemini foi salva em GEMINI_API_KEY.")
    if _unset(env_value(env_path, "GEMINI_API_KEY")):
        print(f"Falta a chave do Gemini: crie em {GEMINI_KEY_PAGE} e rode de novo: "
              "python3 config.py --init-env --gemini-key SUA_CHAVE")
        return 1  # `--init-env && docker compose up` stops here, not at compose's refusal
    print("Próximos passos:")
    print("  1. docker compose up -d --build   (liga tudo; a primeira vez leva alguns minutos)")
    print("  2. docker compose ps   (todos devem estar running ou healthy)")
    print("  3. Abra http://localhost:8000/panel, entre com a PANEL_PASSWORD e vá em Conectar WhatsApp para ler o QR code.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
