"""What the shop knows: its catalog, prices, hours, areas and policies, as a text Gemini reads with every reply.

`prompts/knowledge.md` serves every number; `prompts/<instance>.knowledge.md`, when present, serves
that number instead (as `prompts/<instance>.md` does for the persona). The owner writes it in the
panel or any editor; it is read on every reply, so an edit reaches the very next one. Gemini gets it
inside the system instruction, after the persona and before the conversation, always as the same
bytes for the same files: Gemini's caches (implicit, and the explicit one of gemini_cache.py) reuse
only an unchanged prefix.
"""

import logging
import os
import tempfile
from pathlib import Path

import ai_service

log = logging.getLogger(__name__)

SHARED = "system"  # the name (as the panel's prompts) of the knowledge every number reads
MAX_CHARS = 200_000  # about 50,000 tokens: far past a shop's price list, far below the model's context
HEADING = "\n\n## O que a loja sabe\n\n"  # between the persona and the knowledge; fixed, so the prefix is stable


def path(settings, name=SHARED):
    """prompts/knowledge.md for SHARED, prompts/<name>.knowledge.md for one number (beside SYSTEM_PROMPT_FILE)."""
    folder = Path(settings.system_prompt_file).parent
    return folder / ("knowledge.md" if name == SHARED else f"{name}.knowledge.md")


def read(settings, name=SHARED):
    """The knowledge file's text ("" when there is none)."""
    file = path(settings, name)
    return file.read_text(encoding="utf-8").strip() if file.is_file() else ""


def name_for(settings, instance):
    """Which knowledge a number reads: its own file if it has one, else the shared one."""
    if instance and "/" not in instance and path(settings, instance).is_file():
        return instance
    return SHARED


def for_instance(settings, instance):
    return read(settings, name_for(settings, instance))


def system_instruction(settings, instance="", persona=None, knowledge=None):
    """The persona, then the shop's knowledge: what Gemini reads before the conversation, byte-for-byte
    the same while the files are unchanged. `persona` and `knowledge` replace the files' (the panel's try-it)."""
    persona = ai_service.load_system_prompt(settings, instance) if persona is None else persona.strip()
    knowledge = for_instance(settings, instance) if knowledge is None else knowledge.strip()
    return persona + HEADING + knowledge if knowledge else persona


def write_file(file, text):
    """Replace `file` with `text` at once: a reply reading it meanwhile sees the old or the new text, never half."""
    tmp = None
    try:
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=file.parent, suffix=".tmp", delete=False) as tmp:
            tmp.write(text)
        os.replace(tmp.name, file)
    except OSError:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
        raise


def write(settings, name, text):
    """Save the knowledge `name`; an empty text removes the file (a number then reads the shared one)."""
    file = path(settings, name)
    if not text.strip():
        file.unlink(missing_ok=True)
        return False
    write_file(file, text.strip() + "\n")
    log.info("knowledge %s saved (%d chars)", name, len(text))
    return True


def append(settings, name, line):
    """Add one line at the end of the knowledge `name` (an approved learned answer)."""
    current = read(settings, name)
    write(settings, name, f"{current}\n{line}" if current else line)
