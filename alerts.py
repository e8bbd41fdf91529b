"""WhatsApp messages to the shop owner (OWNER_NUMBER) when a person is needed or something broke.

Texts are pt-BR, since the owner reads them. Sending an alert never raises: a failed alert is
logged, and the customer's conversation goes on.
"""

import logging
import re

import channels
import memory
from parser import mask

log = logging.getLogger(__name__)

ALERT_KEY = "wa:alert:{cause}"
ALERT_EVERY_SECONDS = 3600


def owner_numbers(settings):
    """OWNER_NUMBER as digits ('+55 11 99999-4321' → '5511999994321'), empties dropped."""
    return [digits for digits in (re.sub(r"\D", "", number) for number in settings.owner_number) if digits]


def notify_owner(session, settings, redis, instance, text, cause=None, channel="evolution"):
    """Send `text` to every OWNER_NUMBER through `instance` of `channel`; with `cause`, at most once an hour per cause.

    On the Cloud API and Twilio the owner gets it only within 24 hours of writing to that number (Meta's rule).

    Returns how many owners got it. Never raises.
    """
    numbers = owner_numbers(settings)
    if not numbers or not instance:
        return 0
    if cause is not None:
        try:
            if not redis.set(ALERT_KEY.format(cause=cause), 1, nx=True, ex=ALERT_EVERY_SECONDS):
                log.info("alert %r already sent in the last hour; not repeated", cause)
                return 0
        except Exception as error:  # Redis down: better one alert too many than none
            log.warning("alert %r: cannot check the hourly limit (%s); sending anyway", cause, type(error).__name__)
    sent = 0
    for number in numbers:
        try:
            message_id, _ = channels.send_text(session, settings, channel, instance, number, text)
            sent += 1
            if message_id:  # its echo is the bot's, not a person answering in that chat
                memory.note_alert(redis, instance, message_id)
        except Exception as error:  # noqa: BLE001 - an alert must never break the caller
            log.error("alert to the owner %s on %s failed: %s", mask(number), mask(instance), error)
    if sent:
        log.info("alert sent to %d owner number(s) on %s%s", sent, mask(instance), f" ({cause})" if cause else "")
    return sent


LINK_DOT = re.compile(r"(?<=\w)\.(?=[^\W\d_])")  # "loja.com", "www.x": a dot before a letter (not "45.00")
LINK_SCHEME = re.compile(r"(?i)\b(http|ftp)(s?)(:|%3a)")


def defang(text):
    """Customer-written text as the owner reads it: on one line, and no link WhatsApp would make clickable.

    "https://x.com" becomes "hxxps[:]//x[.]com": still readable, never a tap away from a phishing page,
    and newlines cannot forge lines that look like the alert's own.
    """
    text = " ".join(str(text).split())
    text = LINK_SCHEME.sub(lambda m: f"{m.group(1).lower().replace('tt', 'xx').replace('tp', 'xp')}{m.group(2)}[:]", text)
    return LINK_DOT.sub("[.]", text)


def handoff_alert(name, number, reason, last_words):
    """A customer is waiting for a person: who (name and full number, so the owner can answer), why, and the
    customer's own words, marked as theirs and with every link broken (see `defang`)."""
    name, reason, words = defang(name or ""), defang(reason or ""), defang(last_words or "")
    who = f"{name} ({number})" if name else number
    if len(words) > 500:
        words = words[:500] + "…"
    lines = [
        "🙋 Um cliente quer falar com uma pessoa.",
        f"Cliente: {who}",
        f"Motivo: {reason}",
    ]
    if words:
        lines.append(f"Mensagem do cliente: “{words}”")
    lines.append(f"O bot ficou em silêncio nessa conversa. Responda pelo WhatsApp da loja: wa.me/{re.sub(r'[^0-9]', '', number)}")
    return "\n".join(lines)


def fallback_alert(reason):
    """The bot could not answer a customer (Gemini failing) and sent the fallback message."""
    return (
        "⚠️ O bot não conseguiu responder um cliente e mandou a mensagem de desculpas "
        "(\"uma pessoa da nossa equipe vai te responder\").\n"
        f"Motivo: {reason}\n"
        "Veja as conversas sem resposta no celular. Para achar a causa, rode: "
        "docker compose exec worker python worker.py check"
    )


def instance_closed_alert(instance, state, reason=None):
    """A WhatsApp number served by the bot disconnected: until it is linked again, nobody is answered there."""
    why = {401: "o aparelho desconectou (saiu dos aparelhos conectados)", 403: "o WhatsApp bloqueou o número",
           402: "o WhatsApp recusou a conexão", 406: "o WhatsApp recusou a conexão"}.get(reason, "")
    return (
        f"🔴 O número \"{instance}\" está desconectado do WhatsApp (estado: {state}"
        f"{'; ' + why if why else ''}).\n"
        "Enquanto isso, o bot não recebe nem responde mensagens nesse número.\n"
        "Para voltar: abra o gerenciador do Evolution, conecte a instância de novo e leia o QR code "
        "em WhatsApp → Aparelhos conectados → Conectar um aparelho."
    )
