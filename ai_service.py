"""Ask Google Gemini for one reply, given the chat's history and the customer's merged burst.

The client is made once per process (`make_client`) and passed in. Retries are not done here:
a failed call raises ReplyError and the worker decides when to try again, so no worker sleeps.
"""

import logging
import re
from pathlib import Path

import httpx2
from google import genai
from google.genai import errors, types

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "Você é um atendente cordial de uma pequena loja no WhatsApp. Responda em português, de forma breve."


class Handoff(Exception):
    """Gemini called `transfer_to_human`: the customer wants a person, or the bot cannot help."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


# The one tool Gemini may call: hand the chat to a person, as a customer's explicit request does.
TRANSFER_TO_HUMAN = types.FunctionDeclaration(
    name="transfer_to_human",
    description=(
        "Passa a conversa para uma pessoa da equipe da loja. Use quando o cliente claramente quer falar "
        "com uma pessoa, ou quando você não pode ajudar: reclamação, problema com um pedido, pedido de "
        "reembolso, algo que só a equipe pode resolver. Não use para perguntas comuns."
    ),
    parameters_json_schema={
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "Por que a conversa vai para uma pessoa, em poucas palavras."}},
        "required": ["reason"],
    },
)

# Asked when the burst carries media, so history keeps what Gemini understood of it, not only "[áudio]".
MEDIA_NOTE_REQUEST = (
    "(Antes da resposta, escreva numa linha só [[mídia: ...]] com o que você entendeu da mídia: a transcrição "
    "do áudio ou uma descrição curta da imagem ou do documento. Essa linha não é enviada ao cliente.)"
)
_MEDIA_NOTE = re.compile(r"^\s*\[\[m[ií]dia:\s*(.*?)\]\]\s*", re.DOTALL | re.IGNORECASE)


class ReplyError(Exception):
    """Gemini gave no usable answer; `retryable` says whether trying again later can help."""

    def __init__(self, reason, retryable):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def make_client(settings):
    """One genai client per process, shared by its job threads; GEMINI_BASE_URL points it at a proxy (or a test server).

    Its connection pool (httpx2, the SDK's own default) holds a connection for each of WORKER_CONCURRENCY
    jobs: with fewer, the calls past the pool's size would wait for one another.
    """
    options = types.HttpOptions(
        timeout=int(settings.gemini_timeout_seconds * 1000),
        retry_options=types.HttpRetryOptions(attempts=1),  # the worker retries, with backoff, across jobs
        base_url=settings.gemini_base_url or None,
        client_args={"limits": httpx2.Limits(max_connections=settings.worker_concurrency,
                                             max_keepalive_connections=min(settings.worker_concurrency, 20))},
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
    """Gemini `contents`: the history's turns, then the burst as one user turn (with any media parts).

    Turns of the same role in a row (a customer writing while a person held the chat) are merged,
    so user and model alternate, starting with the user.
    """
    turns = []
    for turn in history:
        if not turn.get("text"):
            continue
        if turns and turns[-1][0] == turn["role"]:
            turns[-1][1].append(turn["text"])
        else:
            turns.append((turn["role"], [turn["text"]]))
    if turns and turns[0][0] != "user":
        turns.insert(0, ("user", ["(início da conversa)"]))
    if turns and turns[-1][0] == "user":  # the burst follows: one user turn
        role, texts = turns.pop()
        user_text = "\n".join([*texts, user_text]) if user_text else "\n".join(texts)
    contents = [types.Content(role=role, parts=[types.Part.from_text(text="\n".join(texts))]) for role, texts in turns]
    parts = [types.Part.from_bytes(data=data, mime_type=mime_type) for mime_type, data in media]
    if media:
        user_text = "\n".join(filter(None, [user_text, MEDIA_NOTE_REQUEST]))
    if user_text or not parts:
        parts.append(types.Part.from_text(text=user_text or "(mensagem sem texto)"))
    contents.append(types.Content(role="user", parts=parts))
    return contents


def split_media_note(text):
    """(what Gemini understood of the media, the reply without that line); ("", text) when there is none."""
    match = _MEDIA_NOTE.match(text)
    if not match:
        return "", text
    return match.group(1).strip(), text[match.end():].strip()


def thinking_config(settings):
    """GEMINI_THINKING_BUDGET: 0 turns thinking off (short WhatsApp answers), -1 leaves the model's default."""
    if settings.gemini_thinking_budget == -1:
        return None
    return types.ThinkingConfig(thinking_budget=settings.gemini_thinking_budget)


def generate_reply(client, settings, history, user_text, system_prompt, media=(), usage=None):
    """Return Gemini's answer text, or raise ReplyError (an empty or blocked answer is one) or Handoff.

    A `usage` dict is filled with the response's token counts (usage_metadata), for the counters.
    """
    contents = build_prompt(history, user_text, media)
    config = types.GenerateContentConfig(
        system_instruction=system_prompt,
        tools=[types.Tool(function_declarations=[TRANSFER_TO_HUMAN])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),  # we act on the call
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

    metadata = response.usage_metadata
    if metadata is not None:  # what each reply costs: README.pt-BR.md "Quanto custa o Gemini"
        log.info("Gemini tokens: prompt %s, answer %s, thinking %s", metadata.prompt_token_count,
                 metadata.candidates_token_count, metadata.thoughts_token_count or 0)
        if usage is not None:  # for the panel's counters
            usage.update(metadata.model_dump(exclude_none=True, include={
                "prompt_token_count", "candidates_token_count", "total_token_count"}))
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        raise ReplyError(f"prompt blocked: {feedback.block_reason}", retryable=False)
    for call in response.function_calls or ():
        if call.name == TRANSFER_TO_HUMAN.name:
            raise Handoff(str((call.args or {}).get("reason") or "pedido do modelo"))
    text = _text(response)
    if not text:
        reason = response.candidates[0].finish_reason if response.candidates else "no candidates"
        raise ReplyError(f"empty answer ({reason})", retryable=False)
    return text


def _text(response):
    """The answer's text parts (never the SDK's warning-raising `.text` on a mixed answer)."""
    if not response.candidates or not response.candidates[0].content:
        return ""
    return "".join(part.text for part in response.candidates[0].content.parts or () if part.text and not part.thought).strip()
