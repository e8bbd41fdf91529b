"""`python worker.py check` as a real process against the fake Evolution and Gemini and a real redis-server."""

import os
import subprocess
import sys

import pytest

import instances
from conftest import ROOT, TOKEN, free_port, wait_until

FILLED = "Você é a Bia, da Doceria Exemplo. Vendemos bolos. Horário: seg a sex, 9h às 18h.\n"


@pytest.fixture
def check(bot_env, redis_server, tmp_path):
    """check(**env) → (exit status, output lines) of `python worker.py check`; the prompt is filled in by default."""
    prompt = tmp_path / "prompts" / "system.md"
    prompt.parent.mkdir()
    prompt.write_text(FILLED, encoding="utf-8")

    def run(**overrides):
        env = {**os.environ, **bot_env, "REDIS_URL": redis_server.url, "SYSTEM_PROMPT_FILE": str(prompt),
               "EVOLUTION_TIMEOUT_SECONDS": "10", **{k.upper(): str(v) for k, v in overrides.items()}}
        done = subprocess.run([sys.executable, "worker.py", "check"], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=60)
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout.splitlines()

    return run


def failed(lines):
    return [line for line in lines if line.startswith("✗")]


def test_a_good_setup_passes(check, evolution, gemini, redis_server):
    evolution.set_webhook("shop", f"http://webhook:8000/webhook?token={TOKEN}")
    instances.record_state(redis_server.client(), "loja2", "open", 200, 0)  # the bot has had events from loja2
    status, lines = check()
    assert status == 0, lines
    assert failed(lines) == []
    assert "✓ Redis: respondendo" in lines
    assert "✓ Gemini: a chave e o modelo gemini-flash-latest responderam" in lines
    for name in ("shop", "Ivo Teste", "loja2"):
        assert f"✓ WhatsApp de {name!r}: conectado" in lines
    assert "✓ webhook de 'shop': configurado para http://webhook:8000/webhook?…" in lines
    assert "✓ webhook de 'loja2': o bot já recebeu eventos desta instância" in lines
    assert any(line.startswith("? webhook de 'Ivo Teste': sem webhook próprio") for line in lines)
    assert "✓ instruções do bot: preenchidas" in lines
    assert lines[-1] == "Tudo certo."
    assert TOKEN not in "\n".join(lines)
    assert len(gemini.requests) == 1  # one tiny request
    assert gemini.requests[0]["body"]["generationConfig"]["maxOutputTokens"] == 8
    assert {r["route"] for r in evolution.requests} == {"fetchInstances", "connectionState", "findWebhook"}
    assert all(r["headers"]["apikey"] == "test-evolution-key" for r in evolution.requests)


def test_a_wrong_gemini_key_fails(check, evolution, gemini):
    status, lines = check(GEMINI_API_KEY="AIza-wrong")
    assert status == 1
    assert failed(lines) == ["✗ Gemini: a chave foi recusada (400 INVALID_ARGUMENT). Confira GEMINI_API_KEY no .env "
                             "(copie de novo em https://aistudio.google.com/apikey, sem espaços: GEMINI_API_KEY=AIzaSy…)"]
    assert "AIza-wrong" not in "\n".join(lines)


def test_a_missing_gemini_key_and_a_retired_model_fail(check, evolution, gemini):
    assert failed(check(GEMINI_API_KEY="")[1])[0].startswith("✗ Gemini: GEMINI_API_KEY está vazia")
    gemini.models = {"gemini-flash-latest"}
    assert failed(check(GEMINI_MODEL="gemini-1.0-pro")[1])[0].startswith("✗ Gemini: o modelo 'gemini-1.0-pro' não existe")


def test_an_unreachable_evolution_fails(check, evolution, gemini):
    evolution.down()
    status, lines = check()
    assert status == 1
    assert failed(lines) == [f"✗ Evolution: não responde em {evolution.url} (ConnectionError). Confira se está rodando "
                             "(docker compose ps evolution) e EVOLUTION_API_URL no .env (no docker compose: "
                             "EVOLUTION_API_URL=http://evolution:8080)"]


def test_a_wrong_evolution_key_fails(check, evolution, gemini):
    status, lines = check(EVOLUTION_API_KEY="wrong-evolution-key-000")
    assert status == 1
    assert failed(lines)[0].startswith("✗ Evolution: a chave foi recusada (401)")


def test_a_closed_instance_fails_and_names_it(check, evolution, gemini):
    evolution.set_state("loja2", "close", 401)
    evolution.set_state("Ivo Teste", "connecting")
    status, lines = check()
    assert status == 1
    assert sorted(line.split(":")[0] for line in failed(lines)) == ["✗ WhatsApp de 'Ivo Teste'", "✗ WhatsApp de 'loja2'"]
    assert "✗ WhatsApp de 'loja2': desconectado (estado close)." in "\n".join(lines)
    assert "✗ WhatsApp de 'Ivo Teste': conectando ainda." in "\n".join(lines)
    assert "✓ WhatsApp de 'shop': conectado" in lines
    for line in failed(lines):  # the fix is the panel's page; Evolution 2.3.7 ignores CONFIG_SESSION_PHONE_VERSION
        assert "/panel/connect" in line and "CONFIG_SESSION_PHONE_VERSION" not in line and "gerenciador" not in line


def test_a_missing_instance_an_unreachable_redis_and_a_webhook_without_the_token_fail(check, evolution, gemini):
    evolution.set_webhook("shop", "http://webhook:8000/webhook?token=old-token")
    status, lines = check(EVOLUTION_INSTANCE="loja-centro", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert status == 1
    marks = [line.split(":")[0] for line in failed(lines)]
    assert marks == ["✗ Redis", "✗ Evolution", "✗ webhook de 'shop'"]
    assert "'loja-centro' (EVOLUTION_INSTANCE) não existe" in failed(lines)[1]
    assert "old-token" not in "\n".join(lines)


def test_the_shipped_prompt_template_fails_until_filled_in(check, evolution, gemini, tmp_path):
    status, lines = check(SYSTEM_PROMPT_FILE=ROOT / "prompts" / "system.md")
    assert status == 1
    assert failed(lines)[0].startswith("✗ instruções do bot: ainda é o modelo: 8 campo(s) [PREENCHA: …]")
    (tmp_path / "prompts" / "loja2.md").write_text("[PREENCHA: nome]", encoding="utf-8")
    status, lines = check()
    assert failed(lines) == ["✗ instruções de 'loja2': ainda é o modelo: 1 campo(s) [PREENCHA: …] em prompts/loja2.md. "
                             "Escreva os dados da loja e apague os colchetes"]


def test_a_malformed_setting_is_one_line(check):
    status, lines = check(BOT_ACTIVE="sometimes", BUSINESS_HOURS="mon 08:00-12:00")
    assert status != 0 and lines == []


def test_a_request_google_refuses_for_another_reason_is_not_called_a_wrong_key(check, evolution, gemini):
    gemini.fail_next(400, body={"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                          "message": "Thinking budget is not supported for this model."}})
    status, lines = check()
    assert status == 1
    assert failed(lines) == ["✗ Gemini: o Google recusou o pedido: Thinking budget is not supported for this model. "
                             "Se fala de thinking, ponha GEMINI_THINKING_BUDGET=-1 no .env"]


def test_a_worker_logs_the_checks_at_start_up_without_asking_gemini(stack, gemini):
    worker = stack.workers[0]
    wait_until(lambda: "check ✗ instruções do bot" in worker.output(), timeout=20, message="the start-up checks")
    log = worker.output()
    assert "check ✓ Redis: respondendo" in log
    assert "check ✓ Gemini: chave configurada" in log
    assert "check ✓ WhatsApp de 'shop': conectado" in log
    assert gemini.requests == []  # a restart spends no quota
