"""`python worker.py check`: is everything the bot needs in place? One line per check, ✓ or ✗ with the fix.

The lines are pt-BR because the shop owner reads them. `run` prints them and returns the exit status
(1 when something is wrong); `log_startup` logs the same checks when a process starts, never raising.
"""

import logging
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import redis as redis_lib
import requests
from google.genai import errors, types

import ai_service
import instances

log = logging.getLogger(__name__)

TEMPLATE_MARKER = "[PREENCHA"  # every blank of the shipped prompts/system.md starts with it
OK, FAIL, UNKNOWN = "✓", "✗", "?"
CONNECT_PAGE = "Conectar WhatsApp (http://localhost:8000/panel/connect)"  # the panel's page that links a number


@dataclass(frozen=True)
class Check:
    mark: str  # OK, FAIL, or UNKNOWN (cannot be checked from here: not an error)
    name: str
    text: str

    def line(self):
        return f"{self.mark} {self.name}: {self.text}"


def run(settings, out=print):
    """Print every check; 0 when none failed, 1 otherwise."""
    results = checks(settings)
    for check in results:
        out(check.line())
    failed = sum(check.mark == FAIL for check in results)
    out("Tudo certo." if not failed else f"{failed} problema(s) para resolver.")
    return 1 if failed else 0


def log_startup(settings):
    """Log the checks at start-up, without the Gemini request (a restart should not spend quota). Never raises."""
    try:
        for check in checks(settings, ask_gemini=False):
            log.log(logging.WARNING if check.mark == FAIL else logging.INFO, "check %s", check.line())
    except Exception:  # noqa: BLE001 - a diagnostic must never stop the bot
        log.exception("start-up checks failed")


def checks(settings, ask_gemini=True):
    """Every check, in the order a problem is best fixed."""
    timeout = min(settings.evolution_timeout_seconds, 5.0)
    results = [check_redis(settings)]
    results.append(check_gemini(settings) if ask_gemini else check_gemini_key(settings))
    session = requests.Session()
    evolution, names = check_evolution(settings, session, timeout)
    results.append(evolution)
    seen = _seen_instances(settings)
    for name in names:
        results.append(check_connection(settings, session, timeout, name))
        results.append(check_webhook(settings, session, timeout, name, seen))
    results.extend(check_prompts(settings, names))
    return results


def check_redis(settings):
    try:
        redis_lib.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2).ping()
        return Check(OK, "Redis", "respondendo")
    except redis_lib.RedisError as error:
        return Check(FAIL, "Redis", f"não responde em {_hide_password(settings.redis_url)} ({type(error).__name__}). "
                     "Confira se o serviço está rodando (docker compose ps redis) e REDIS_URL no .env (no docker "
                     "compose ele vem pronto; fora dele, por exemplo: REDIS_URL=redis://localhost:6379/0)")


def check_gemini_key(settings):
    if settings.gemini_api_key.strip():
        return Check(OK, "Gemini", "chave configurada (o teste completo: python worker.py check)")
    return Check(FAIL, "Gemini", "GEMINI_API_KEY está vazia. Crie uma chave em https://aistudio.google.com/apikey e "
                 "coloque no .env (GEMINI_API_KEY=AIzaSy…); depois: docker compose up -d")


def check_gemini(settings):
    """One tiny generateContent with the real client: proves the key, the model name and the network."""
    if not settings.gemini_api_key.strip():
        return check_gemini_key(settings)
    config = types.GenerateContentConfig(max_output_tokens=8, thinking_config=ai_service.thinking_config(settings))
    client = ai_service.make_client(settings)  # kept in a name: a dropped Client closes its HTTP client
    try:
        client.models.generate_content(model=settings.gemini_model, contents="Responda só: ok", config=config)
    except errors.APIError as error:
        if error.code == 400 and "api key" not in str(error.message).lower():
            return Check(FAIL, "Gemini", f"o Google recusou o pedido: {str(error.message)[:160].rstrip('.')}. Se fala de "
                         "thinking, ponha GEMINI_THINKING_BUDGET=-1 no .env")
        if error.code in (400, 401, 403):
            return Check(FAIL, "Gemini", f"a chave foi recusada ({error.code} {error.status}). Confira GEMINI_API_KEY no "
                         ".env (copie de novo em https://aistudio.google.com/apikey, sem espaços: GEMINI_API_KEY=AIzaSy…)")
        if error.code == 404:
            return Check(FAIL, "Gemini", f"o modelo {settings.gemini_model!r} não existe mais. Ponha "
                         "GEMINI_MODEL=gemini-flash-latest no .env")
        if error.code == 429:
            return Check(FAIL, "Gemini", "a cota da chave acabou (429). Espere o fim do minuto/dia ou ative o "
                         "faturamento no Google AI Studio")
        return Check(FAIL, "Gemini", f"o Google respondeu {error.code} {error.status}. Tente de novo em alguns minutos")
    except Exception as error:  # noqa: BLE001 - the SDK's transport: refused, timed out, DNS
        return Check(FAIL, "Gemini", f"sem conexão com o Google ({type(error).__name__}). Confira a internet da "
                     "máquina e GEMINI_BASE_URL (deixe vazio)")
    return Check(OK, "Gemini", f"a chave e o modelo {settings.gemini_model} responderam")


def _get(settings, session, timeout, path):
    """GET an Evolution path with the apikey header: (status or None when it never answered, JSON or None)."""
    url = settings.evolution_api_url.rstrip("/") + path
    try:
        response = session.get(url, headers={"apikey": settings.evolution_api_key}, timeout=timeout)
    except requests.RequestException as error:
        return None, type(error).__name__
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def check_evolution(settings, session, timeout):
    """The key works on /instance/fetchInstances; returns (check, instance names to check next)."""
    if not settings.evolution_api_url:
        return Check(FAIL, "Evolution", "EVOLUTION_API_URL está vazia (no docker compose: http://evolution:8080)"), []
    status, body = _get(settings, session, timeout, "/instance/fetchInstances")
    if status is None:
        return Check(FAIL, "Evolution", f"não responde em {settings.evolution_api_url} ({body}). Confira se está "
                     "rodando (docker compose ps evolution) e EVOLUTION_API_URL no .env (no docker compose: "
                     "EVOLUTION_API_URL=http://evolution:8080)"), []
    if status in (401, 403):
        return Check(FAIL, "Evolution", "a chave foi recusada (401). EVOLUTION_API_KEY no .env deve ser igual à "
                     "AUTHENTICATION_API_KEY do Evolution; depois: docker compose up -d"), []
    if status != 200 or not isinstance(body, list):
        return Check(FAIL, "Evolution", f"resposta inesperada ({status}) de {settings.evolution_api_url}: é mesmo o "
                     "Evolution API v2?"), []
    names = [row.get("name") for row in body if isinstance(row, dict) and isinstance(row.get("name"), str)]
    if settings.evolution_instance and settings.evolution_instance not in names:
        return Check(FAIL, "Evolution", f"a instância {settings.evolution_instance!r} (EVOLUTION_INSTANCE) não existe. "
                     f"Crie no painel, em {CONNECT_PAGE} (existem: {', '.join(names) or 'nenhuma'})"), names
    if not names:
        return Check(FAIL, "Evolution", f"nenhuma instância criada. Abra o painel em {CONNECT_PAGE}, crie uma "
                     "e leia o QR code"), []
    return Check(OK, "Evolution", f"respondendo, com a chave certa; instâncias: {', '.join(names)}"), names


def check_connection(settings, session, timeout, name):
    """GET /instance/connectionState/{instance} → {"instance": {"instanceName", "state"}}."""
    status, body = _get(settings, session, timeout, f"/instance/connectionState/{quote(name, safe='')}")
    state = ((body or {}).get("instance") or {}).get("state") if isinstance(body, dict) else None
    label = f"WhatsApp de {name!r}"
    if state == "open":
        return Check(OK, label, "conectado")
    if status is None or status != 200:
        return Check(FAIL, label, f"não consegui ver o estado ({status or body})")
    if state == "connecting":
        return Check(FAIL, label, f"conectando ainda. Se não passar disso, leia o QR code de novo no painel, em "
                     f"{CONNECT_PAGE}; se o QR code não aparece, veja \"O QR code não aparece\" no README.pt-BR.md")
    return Check(FAIL, label, f"desconectado (estado {state or 'desconhecido'}). Abra o painel em {CONNECT_PAGE} "
                 "e leia o QR code em WhatsApp → Aparelhos conectados")


def check_webhook(settings, session, timeout, name, seen):
    """The instance's own webhook (GET /webhook/find), else what the bot saw; the global webhook is not visible."""
    label = f"webhook de {name!r}"
    status, row = _get(settings, session, timeout, f"/webhook/find/{quote(name, safe='')}")
    if status == 200 and isinstance(row, dict) and row.get("url"):
        url = str(row["url"])
        shown = _hide_query(url)
        if row.get("enabled") is False:
            return _seen_or(name, seen, Check(FAIL, label, f"o webhook próprio ({shown}) está desligado. Ligue em "
                            "Eventos → Webhook no gerenciador, ou apague-o e use o global do docker compose"))
        if settings.webhook_token and settings.webhook_token not in url:
            return Check(FAIL, label, f"aponta para {shown} sem o WEBHOOK_TOKEN do .env: o bot recusa essas "
                         "chamadas. Corrija a URL (…/webhook?token=SEU_TOKEN) no gerenciador")
        return Check(OK, label, f"configurado para {shown}")
    if name in seen:
        return Check(OK, label, "o bot já recebeu eventos desta instância")
    return Check(UNKNOWN, label, "sem webhook próprio: depende do webhook global (WEBHOOK_GLOBAL_URL no "
                 "docker-compose.yml), que a API do Evolution não mostra. Mande uma mensagem de outro celular e "
                 "veja se aparece em: docker compose logs webhook")


def _seen_or(name, seen, check):
    return Check(OK, check.name, "o bot já recebeu eventos desta instância") if name in seen else check


def _seen_instances(settings):
    """Instances the webhook has recorded a connection.update for: proof that Evolution reaches the bot."""
    try:
        client = redis_lib.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
        return set(instances.all_states(client))
    except redis_lib.RedisError:
        return set()


def check_prompts(settings, names):
    """The persona each number uses is no longer the shipped fill-in template."""
    results = []
    for name in dict.fromkeys([""] + list(names)):
        prompt = ai_service.load_system_prompt(settings, name)
        if name and prompt == ai_service.load_system_prompt(settings, ""):
            continue  # same prompt as the default: reported once
        label = f"instruções de {name!r}" if name else "instruções do bot"
        where = f"prompts/{name}.md" if name else ("SYSTEM_PROMPT" if settings.system_prompt.strip() else settings.system_prompt_file)
        if TEMPLATE_MARKER in prompt:
            blanks = prompt.count(TEMPLATE_MARKER)
            results.append(Check(FAIL, label, f"ainda é o modelo: {blanks} campo(s) [PREENCHA: …] em {where}. "
                                 "Escreva os dados da loja e apague os colchetes"))
        else:
            results.append(Check(OK, label, "preenchidas"))
    return results


def _hide_query(url):
    """A URL without its query (the token lives there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")


def _hide_password(url):
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"

