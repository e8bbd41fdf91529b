"""`python chat.py`: a terminal conversation through the real buffer → job → Gemini path."""

import os
import subprocess
import sys

from conftest import GEMINI_KEY, ROOT


def test_terminal_chat_merges_a_burst_and_prints_the_split_reply(gemini):
    gemini.reply_with("Oi! Temos sim.\n\nQuer ver as cores?")
    env = {**os.environ, "GEMINI_API_KEY": GEMINI_KEY, "GEMINI_BASE_URL": gemini.url}
    done = subprocess.run(
        [sys.executable, "chat.py", "--debounce", "1"], input="oi\ntem camiseta?\n", capture_output=True,
        text=True, env=env, cwd=ROOT, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert gemini.user_texts(0) == ["oi\ntem camiseta?"]
    assert len(gemini.requests) == 1
    assert done.stdout.index("Oi! Temos sim.") < done.stdout.index("Quer ver as cores?")


def test_a_missing_key_is_one_line_not_a_traceback():
    env = {**os.environ, "GEMINI_API_KEY": ""}
    done = subprocess.run([sys.executable, "chat.py"], input="", capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr == ("erro de configuração: GEMINI_API_KEY: falta no .env. Exemplo: GEMINI_API_KEY=AIzaSy... "
                           "(crie a chave em https://aistudio.google.com/apikey)\n")
