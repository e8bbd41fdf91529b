"""What docker-compose.yml and the image protect, read from the file Compose resolves (`docker-compose config`).

Each protection is a check in `problems()`; the mutation tests remove it from the resolved file one at a
time and show that the check notices, so a check that can never fail would fail here.
"""

import copy
import fnmatch
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import ROOT

DUMMY = {  # 16+ characters each, as config.py requires
    "EVOLUTION_API_KEY": "dummy-evolution-key-0001",
    "GEMINI_API_KEY": "dummy-gemini-key-0002",
    "WEBHOOK_TOKEN": "dummy-webhook-token-0003",
    "REDIS_PASSWORD": "dummy-redis-password-0004",
    "EVOLUTION_DB_PASSWORD": "dummy-database-password-0005",
}
BOT = ("webhook", "worker")
EVOLUTION_SIDE = ("evolution", "evolution-postgres", "evolution-redis")


def compose_config(directory, env):
    """Run `docker-compose config` on our file in `directory` with an empty .env and only `env` set."""
    binary = shutil.which("docker-compose")
    if not binary:
        pytest.fail("docker-compose is not installed: run `bash .ci/run`, which installs it")
    shutil.copy(ROOT / "docker-compose.yml", directory / "docker-compose.yml")
    (directory / ".env").write_text("")
    return subprocess.run([binary, "-f", "docker-compose.yml", "config"], cwd=directory, capture_output=True,
                          text=True, timeout=120, env={"PATH": os.environ["PATH"], "HOME": str(directory), **env})


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    done = compose_config(tmp_path_factory.mktemp("compose"), DUMMY)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


# --- the checks -----------------------------------------------------------------------------

def networks_of(service):
    """A service's networks; Compose puts a service that names none on `default`."""
    return set(service.get("networks") or ["default"])


def command_options(service):
    """`--name value` pairs of a service's command (list or string form)."""
    command = service.get("command") or []
    words = shlex.split(command) if isinstance(command, str) else [str(word) for word in command]
    return {word: (words[i + 1] if i + 1 < len(words) else "") for i, word in enumerate(words) if word.startswith("--")}


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {name: ("" if value is None else str(value)) for name, value in env.items()}


def mounts(service):
    """(source, target, read-only) of each volume, from Compose 1's short form or Compose 2's long form."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found.append((str(volume.get("source")), volume.get("target"), bool(volume.get("read_only"))))
        else:
            parts = volume.split(":")
            found.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return found


def problems(config):
    """Every protection missing from a resolved compose file, one line each."""
    services, networks = config["services"], config.get("networks") or {}
    found = []

    # The bot's Redis: only on internal networks that Evolution is not on.
    redis = services["redis"]
    if networks_of(redis) & networks_of(services["evolution"]):
        found.append(f"redis shares a network with evolution: {networks_of(redis) & networks_of(services['evolution'])}")
    for name in networks_of(redis):
        if not (networks.get(name) or {}).get("internal"):
            found.append(f"redis is on network {name!r}, which is not internal")
    for side in ("evolution-postgres", "evolution-redis"):
        for bot in (*BOT, "redis"):
            if networks_of(services[side]) & networks_of(services[bot]):
                found.append(f"{bot} shares a network with {side}")
        for name in networks_of(services[side]):
            if not (networks.get(name) or {}).get("internal"):
                found.append(f"{side} is on network {name!r}, which is not internal")

    # Its password, and a memory ceiling that never evicts the bot's state.
    options, password = command_options(redis), DUMMY["REDIS_PASSWORD"]
    if options.get("--requirepass") != password:
        found.append("redis has no --requirepass REDIS_PASSWORD")
    if environment(redis).get("REDISCLI_AUTH") != password:
        found.append("redis healthcheck has no REDISCLI_AUTH")
    if not options.get("--maxmemory"):
        found.append("redis has no --maxmemory")
    if options.get("--maxmemory-policy") != "noeviction":
        found.append("redis --maxmemory-policy is not noeviction")
    if options.get("--save", None) != "":
        found.append('redis keeps RDB snapshots (no --save "")')
    for bot in BOT:
        if environment(services[bot]).get("REDIS_URL") != f"redis://:{password}@redis:6379/0":
            found.append(f"{bot} REDIS_URL does not carry REDIS_PASSWORD")

    # Evolution's Postgres password is the operator's.
    db_password = DUMMY["EVOLUTION_DB_PASSWORD"]
    if environment(services["evolution-postgres"]).get("POSTGRES_PASSWORD") != db_password:
        found.append("POSTGRES_PASSWORD is not EVOLUTION_DB_PASSWORD")
    if f":{db_password}@" not in environment(services["evolution"]).get("DATABASE_CONNECTION_URI", ""):
        found.append("DATABASE_CONNECTION_URI does not use EVOLUTION_DB_PASSWORD")

    # The bot's containers (and Redis): no privilege gain, no capabilities, read-only root.
    for name in (*BOT, "redis"):
        service = services[name]
        if "no-new-privileges:true" not in (service.get("security_opt") or []):
            found.append(f"{name} lacks security_opt no-new-privileges:true")
        if "ALL" not in (service.get("cap_drop") or []):
            found.append(f"{name} lacks cap_drop ALL")
        if service.get("read_only") is not True:
            found.append(f"{name} is not read_only")
        if service.get("cap_add"):
            found.append(f"{name} adds capabilities back: {service['cap_add']}")
        if not service.get("mem_limit"):
            found.append(f"{name} has no mem_limit")

    # Evolution's side, as far as its images allow (docs/security.md says what they do not).
    for name in EVOLUTION_SIDE:
        service = services[name]
        if "no-new-privileges:true" not in (service.get("security_opt") or []):
            found.append(f"{name} lacks security_opt no-new-privileges:true")
        if "ALL" not in (service.get("cap_drop") or []):
            found.append(f"{name} lacks cap_drop ALL")
    for name in ("evolution-postgres", "evolution-redis"):
        if services[name].get("read_only") is not True:
            found.append(f"{name} is not read_only")
    if services["evolution-redis"].get("user") != "redis":
        found.append("evolution-redis runs as root")
    if set(services["evolution-postgres"].get("cap_add") or []) - {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"}:
        found.append(f"evolution-postgres adds more capabilities: {services['evolution-postgres']['cap_add']}")
    if environment(services["evolution"]).get("AUTHENTICATION_EXPOSE_IN_FETCH_INSTANCES") != "false":
        found.append("evolution exposes instance keys in fetchInstances")

    # Evolution keeps only what the bot needs, and sends the events the bot reads.
    evolution = environment(services["evolution"])
    wanted = {"DATABASE_SAVE_DATA_HISTORIC": "false", "DATABASE_SAVE_DATA_CONTACTS": "false",
              "DATABASE_SAVE_DATA_CHATS": "false", "DATABASE_SAVE_DATA_LABELS": "false",
              "DATABASE_SAVE_MESSAGE_UPDATE": "false", "DATABASE_SAVE_DATA_NEW_MESSAGE": "true",
              "WEBHOOK_EVENTS_MESSAGES_UPSERT": "true", "WEBHOOK_EVENTS_SEND_MESSAGE": "true",
              "WEBHOOK_EVENTS_CONNECTION_UPDATE": "true"}
    for name, value in wanted.items():
        if evolution.get(name) != value:
            found.append(f"evolution {name} is {evolution.get(name)!r}, not {value!r}")
    for name in ("WEBHOOK_EVENTS_REMOVE_INSTANCE", "WEBHOOK_EVENTS_LOGOUT_INSTANCE"):  # Evolution 2.3.7 never reads them
        if name in evolution:
            found.append(f"evolution sets {name}, which it does not read")

    # Prompts edited on the host apply without a rebuild.
    for bot in BOT:
        if not any(target == "/app/prompts" and source.rstrip("/").endswith("prompts")
                   for source, target, _ in mounts(services[bot])):
            found.append(f"{bot} does not mount ./prompts at /app/prompts")
    return found


# --- the real file --------------------------------------------------------------------------

def test_resolved_compose_file_has_every_protection(resolved):
    assert problems(resolved) == []


@pytest.mark.parametrize("name", sorted(DUMMY))
def test_compose_refuses_to_start_without_each_secret(tmp_path, name):
    """`:?` in docker-compose.yml: no default (no Postgres password `evolution`), a clear error naming it."""
    env = {key: value for key, value in DUMMY.items() if key != name}
    done = compose_config(tmp_path, env)
    assert done.returncode != 0, f"compose accepted a missing {name}"
    assert f"falta {name} no .env, rode python3 config.py --init-env" in done.stderr  # pt-BR: the owner reads it


def test_evolution_posts_to_the_webhook_and_the_worker_reaches_evolution(resolved):
    services = resolved["services"]
    shared = networks_of(services["evolution"]) & networks_of(services["webhook"]) & networks_of(services["worker"])
    assert shared, "Evolution could not reach the webhook or the worker Evolution"
    assert not any((resolved["networks"].get(name) or {}).get("internal") for name in shared)  # Gemini is outside
    assert environment(services["evolution"])["WEBHOOK_GLOBAL_URL"] == \
        f"http://webhook:8000/webhook?token={DUMMY['WEBHOOK_TOKEN']}"


# --- each check fails when its protection is removed -----------------------------------------

def _set(path, value):
    def mutate(config):
        *parents, last = path
        node = config
        for key in parents:
            node = node[key]
        node[last] = value
    return mutate


def _del(path):
    def mutate(config):
        *parents, last = path
        node = config
        for key in parents:
            node = node[key]
        del node[last]
    return mutate


def _redis_command(drop=None, replace=None):
    def mutate(config):
        words = [str(word) for word in config["services"]["redis"]["command"]]
        if drop:
            at = words.index(drop)
            del words[at:at + 2]
        if replace:
            words[words.index(replace[0]) + 1] = replace[1]
        config["services"]["redis"]["command"] = words
    return mutate


def _add_network(service, network):
    def mutate(config):
        networks = config["services"][service].get("networks") or {}
        config["services"][service]["networks"] = [*networks, network]
    return mutate


MUTATIONS = {
    "redis on edge": (_add_network("redis", "edge"), "redis shares a network with evolution"),
    "evolution on bot": (_add_network("evolution", "bot"), "redis shares a network with evolution"),
    "redis on the default network": (_del(("services", "redis", "networks")), "not internal"),
    "bot network not internal": (_set(("networks", "bot", "internal"), False), "'bot', which is not internal"),
    "worker on evolution's network": (_add_network("worker", "evolution"), "worker shares a network with evolution-"),
    "no requirepass": (_redis_command(drop="--requirepass"), "no --requirepass"),
    "no maxmemory": (_redis_command(drop="--maxmemory"), "no --maxmemory"),
    "evicting policy": (_redis_command(replace=("--maxmemory-policy", "allkeys-lru")), "not noeviction"),
    "worker without password": (_set(("services", "worker", "environment", "REDIS_URL"), "redis://redis:6379/0"),
                                "worker REDIS_URL"),
    "postgres default password": (_set(("services", "evolution-postgres", "environment", "POSTGRES_PASSWORD"),
                                       "evolution"), "POSTGRES_PASSWORD"),
    "webhook may gain privileges": (_del(("services", "webhook", "security_opt")), "webhook lacks security_opt"),
    "worker keeps capabilities": (_del(("services", "worker", "cap_drop")), "worker lacks cap_drop ALL"),
    "worker adds one back": (_set(("services", "worker", "cap_add"), ["NET_RAW"]), "worker adds capabilities"),
    "webhook writable": (_set(("services", "webhook", "read_only"), False), "webhook is not read_only"),
    "redis may gain privileges": (_set(("services", "redis", "security_opt"), []), "redis lacks security_opt"),
    "historic sync kept": (_set(("services", "evolution", "environment", "DATABASE_SAVE_DATA_HISTORIC"), "true"),
                           "DATABASE_SAVE_DATA_HISTORIC"),
    "contacts kept": (_set(("services", "evolution", "environment", "DATABASE_SAVE_DATA_CONTACTS"), "true"),
                      "DATABASE_SAVE_DATA_CONTACTS"),
    "unread event name": (_set(("services", "evolution", "environment", "WEBHOOK_EVENTS_LOGOUT_INSTANCE"), "false"),
                          "WEBHOOK_EVENTS_LOGOUT_INSTANCE"),
    "rdb snapshots": (_redis_command(drop="--save"), "RDB snapshots"),
    "worker without memory limit": (_del(("services", "worker", "mem_limit")), "worker has no mem_limit"),
    "evolution keeps capabilities": (_del(("services", "evolution", "cap_drop")), "evolution lacks cap_drop ALL"),
    "evolution may gain privileges": (_del(("services", "evolution", "security_opt")), "evolution lacks security_opt"),
    "postgres writable": (_set(("services", "evolution-postgres", "read_only"), False), "evolution-postgres is not"),
    "postgres gains more": (_set(("services", "evolution-postgres", "cap_add"), ["SYS_ADMIN"]), "adds more capab"),
    "evolution redis as root": (_del(("services", "evolution-redis", "user")), "evolution-redis runs as root"),
    "instance keys exposed": (_set(("services", "evolution", "environment", "AUTHENTICATION_EXPOSE_IN_FETCH_INSTANCES"),
                                   "true"), "exposes instance keys"),
    "prompts baked in": (_set(("services", "worker", "volumes"), []), "worker does not mount ./prompts"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_check_fails_when_its_protection_is_removed(resolved, name):
    mutate, expected = MUTATIONS[name]
    config = copy.deepcopy(resolved)
    mutate(config)
    found = problems(config)
    assert any(expected in problem for problem in found), found


# --- the image ------------------------------------------------------------------------------

def dockerignore_rules():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def in_build_context(path, rules):
    """Whether Docker sends top-level `path` (a file or folder name): the last matching rule wins."""
    included = True
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule[1:] if negated else rule
        if fnmatch.fnmatchcase(path, pattern.rstrip("/")):
            included = negated
    return included


def test_dockerignore_is_an_allowlist_of_what_the_image_needs():
    rules = dockerignore_rules()
    assert rules[0] == "*", "the first rule must leave everything out"
    for needed in ("webhook.py", "worker.py", "config.py", "prompts", "requirements.lock", "templates", "static",
                   "weak_passwords.txt"):  # config.py reads it at start-up
        assert in_build_context(needed, rules), needed
    for secret in (".env", ".env.local", ".git", "tests", "bench", "appendonly.aof", "dump.rdb", ".ci"):
        assert not in_build_context(secret, rules), secret


def test_image_base_is_pinned_and_packages_install_only_with_their_hashes():
    dockerfile = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert bases and all(re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", b) for b in bases), bases
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all("--require-hashes" in line and "requirements.lock" in line for line in installs), installs


def test_lock_pins_every_requirement_with_hashes_and_a_version_requirements_txt_allows():
    """Fails when requirements.txt changes (say, twilio added) without regenerating requirements.lock."""
    lock = (ROOT / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.M))
    blocks = re.split(r"^(?=[A-Za-z0-9_.-]+==)", lock, flags=re.M)[1:]
    assert pins and len(blocks) == len(pins) and all("--hash=sha256:" in block for block in blocks)
    pins = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins.items()}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{name} is in requirements.txt but not in requirements.lock: regenerate the lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
