"""Ask Google Gemini for one reply, given the chat's history and the customer's merged burst.

The client is made once per process (`make_client`) and passed in. Retries are not done here:
a failed call raises ReplyError and the worker decides when to try again, so no worker sleeps.
"""

import logging
from pathlib import Path

from google import genai
from google.genai import errors, types

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "Você é um atendente cordial de uma pequena loja no WhatsApp. Responda em português, de forma breve."


class ReplyError(Exception):
    """Gemini gave no usable answer; `retryable` says whether trying again later can help."""

    def __init__(self, reason, retryable):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def make_client(settings):
    """One genai client per process; GEMINI_BASE_URL points it at a proxy (or a test server)."""
    options = types.HttpOptions(
        timeout=int(settings.gemini_timeout_seconds * 1000),
        retry_options=types.HttpRetryOptions(attempts=1),  # the worker retries, with backoff, across jobs
        base_url=settings.gemini_base_url or None,
    )
    return genai.Client(api_key=settings.gemini_api_key, http_options=options)


def load_system_prompt(settings, instance=""):
    """The persona: `prompts/<instance>.md` if present, else SYSTEM_PROMPT, else SYSTEM_PROMPT_FILE.

    Read on every reply (a small file), so a shop can edit its prompt without a restart.
    """
    prompt_dir = Path(settings.system_prompt_file).parent
    per_instance = prompt_dir / f"{instance}.md"
    if instance and "/" not in instance and per_instance.is_file():
        return per_instance.read_text(encoding="utf-8").strip()
    if settings.system_prompt.strip():
        return settings.system_prompt.strip()
    path = Path(settings.system_prompt_file)
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    log.warning("no system prompt found at %s; using a minimal default", path)
    return DEFAULT_PROMPT


def build_prompt(history, user_text, media=()):
    """Gemini `contents`: the history's turns, then the burst as one user turn (with any media parts)."""
    contents = [
        types.Content(role=turn["role"], parts=[types.Part.from_text(text=turn["text"])])
        for turn in history
        if turn.get("text")
    ]
    parts = [types.Part.from_bytes(data=data, mime_type=mime_type) for mime_type, data in media]
    if user_text or not parts:
        parts.append(types.Part.from_text(text=user_text or "(mensagem sem texto)"))
    contents.append(types.Content(role="user", parts=parts))
    return contents


def thinking_config(settings):
    """GEMINI_THINKING_BUDGET: 0 turns thinking off (short WhatsApp answers), -1 leaves the model's default."""
    if settings.gemini_thinking_budget == -1:
        return None
    return types.ThinkingConfig(thinking_budget=settings.gemini_thinking_budget)


def generate_reply(client, settings, history, user_text, system_prompt, media=()):
    """Return Gemini's answer text, or raise ReplyError. An empty or blocked answer is an error."""
    contents = build_prompt(history, user_text, media)
    config = types.GenerateContentConfig(
        system_instruction=system_prompt,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),  # we declare no tools
        max_output_tokens=settings.gemini_max_output_tokens,
        thinking_config=thinking_config(settings),
    )
    try:
        response = client.models.generate_content(model=settings.gemini_model, contents=contents, config=config)
    except errors.APIError as error:
        retryable = error.code in (408, 429) or (error.code or 500) >= 500
        raise ReplyError(f"Gemini answered {error.code} {error.status}", retryable) from error
    except Exception as error:  # the SDK's transport (httpx or httpx2) failed: refused, reset, timed out
        raise ReplyError(f"Gemini unreachable: {type(error).__name__}", retryable=True) from error

    usage = response.usage_metadata
    if usage is not None:  # what each reply costs: README.pt-BR.md "Quanto custa o Gemini"
        log.info("Gemini tokens: prompt %s, answer %s, thinking %s", usage.prompt_token_count,
                 usage.candidates_token_count, usage.thoughts_token_count or 0)
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        raise ReplyError(f"prompt blocked: {feedback.block_reason}", retryable=False)
    text = (response.text or "").strip() if response.candidates else ""
    if not text:
        reason = response.candidates[0].finish_reason if response.candidates else "no candidates"
        raise ReplyError(f"empty answer ({reason})", retryable=False)
    return text
