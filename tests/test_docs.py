"""The docs agree with the code and with each other: settings, links, the figures the guides quote.

docs/settings.md holds the full settings table and names the same settings as .env.example and
config.Settings; the owner's guide (README.pt-BR.md) names the ten the owner touches; every relative
link in README.md, README.pt-BR.md and docs/ leads to a file (and a heading) that exists.
"""

import re
import unicodedata

import config
from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "README.pt-BR.md").read_text(encoding="utf-8")
SETTINGS_DOC = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
ENV_EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")
DOCS = [ROOT / "README.md", ROOT / "README.pt-BR.md", *sorted((ROOT / "docs").glob("*.md"))]

# The settings the owner touches, in the guide's table: two in .env, the rest in the panel.
OWNER_SETTINGS = {"GEMINI_API_KEY", "PANEL_PASSWORD", "BOT_PAUSED", "BOT_ACTIVE", "BUSINESS_HOURS", "CLOSED_MESSAGE",
                  "HANDOFF_MESSAGE", "OWNER_NUMBER", "DEBOUNCE_SECONDS", "HANDOFF_PAUSE_MINUTES"}


def env_example_names():
    """Every `NAME=` in .env.example, set or commented out (`# NAME=`)."""
    return set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE, re.MULTILINE))


def table_names(text):
    """The first column of a markdown table whose cells start with a `SETTING`."""
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, re.MULTILINE))


def test_every_setting_in_env_example_is_in_the_settings_table():
    assert sorted(env_example_names() - table_names(SETTINGS_DOC)) == []


def test_every_setting_in_the_settings_table_is_in_env_example():
    names = table_names(SETTINGS_DOC)
    assert len(names) > 50  # the table was found and read
    assert sorted(names - env_example_names()) == []


def test_every_bot_setting_is_in_env_example():
    fields = {field.upper() for field in config.Settings.__dataclass_fields__}
    assert sorted(fields - env_example_names()) == []


def test_the_guide_names_the_ten_owner_settings_and_sends_to_the_full_table():
    assert table_names(GUIDE) == OWNER_SETTINGS
    assert "(docs/settings.md)" in GUIDE
    assert all(f"`{name}`" in SETTINGS_DOC.split("## Every setting")[0] for name in OWNER_SETTINGS)


def test_the_readme_is_a_front_page_that_links_the_guide_at_the_top_and_the_licence():
    assert len(README.encode("utf-8")) <= 15 * 1024
    assert "(README.pt-BR.md)" in README.split("\n## ", 1)[0]
    assert "(LICENSE)" in README and (ROOT / "LICENSE").read_text().startswith("MIT License")
    for page in ("settings", "running", "channels", "security", "api", "speed"):
        assert f"(docs/{page}.md)" in README


def test_the_readme_and_ci_run_the_same_test_command():
    command = re.search(r'exec "\$VENV/bin/python" (-m pytest [^"$]*)"', (ROOT / ".ci" / "run").read_text()).group(1)
    assert f".venv/bin/python {command.strip()}" in README


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens (accents kept)."""
    text = unicodedata.normalize("NFC", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_every_relative_link_leads_to_a_file_and_heading_that_exist():
    broken = []
    for page in DOCS:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), re.MULTILINE)
                if anchor not in {slug(heading) for heading in headings}:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_the_guides_quote_the_backlog_age_the_code_uses():
    age = config.Settings.max_message_age_seconds
    assert f"{age // 60} minutos" in GUIDE and f"older than {age}s" in GUIDE
    running = (ROOT / "docs" / "running.md").read_text(encoding="utf-8")
    assert f"older than {age}s" in running
    for page in DOCS:
        assert not re.search(r"older than (?!%ds)\d+s" % age, page.read_text(encoding="utf-8")), page.name


def test_no_guide_asks_for_a_restart_after_editing_a_prompt():
    """ai_service.load_system_prompt reads the file on every reply: a saved prompt counts from the next one."""
    for page in DOCS:
        text = page.read_text(encoding="utf-8")
        assert "restart webhook worker" not in text, page.name
    assert "não precisa reiniciar" in GUIDE.lower()


def test_the_guide_never_sends_the_owner_to_config_session_phone_version():
    assert "ignora essa variável" in GUIDE.split("CONFIG_SESSION_PHONE_VERSION", 1)[1][:60]


def test_ci_run_installs_into_the_repositorys_venv_never_the_systems_python():
    """What the README promises of `bash .ci/run`: pip only ever runs from .venv, and the tests run there."""
    script = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in script.splitlines() if not line.strip().startswith("#")]
    pip = [line for line in commands if "pip install" in line]
    assert pip and all(line.startswith('"$VENV/bin/python" -m pip install') for line in pip), pip
    assert "VENV=.venv" in commands and '"$PYTHON" -m venv "$VENV"' in script
    assert "--break-system-packages" not in script and "sudo pip" not in script
    assert commands[-1].startswith('exec "$VENV/bin/python" -m pytest')


def test_the_settings_marked_panel_are_the_ones_the_panel_changes():
    import shop_settings

    marked = set(re.findall(r"^\| `([A-Z_]+)` \| [^|]* \| \*\*Panel\.\*\*", SETTINGS_DOC, re.MULTILINE))
    assert marked == {name.upper() for name in shop_settings.FIELDS}
    assert OWNER_SETTINGS - {"GEMINI_API_KEY", "PANEL_PASSWORD"} == marked
