"""The Portuguese guide and .env.example name the same settings, so neither drifts from the other."""

import re

import config
from conftest import ROOT

GUIDE = (ROOT / "README.pt-BR.md").read_text(encoding="utf-8")
ENV_EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")


def env_example_names():
    """Every `NAME=` in .env.example, set or commented out (`# NAME=`)."""
    return set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE, re.MULTILINE))


def guide_table_names():
    """The first column of the guide's settings table (the section "Todas as configurações")."""
    section = GUIDE.split("## Todas as configurações", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", section, re.MULTILINE))


def test_every_setting_in_env_example_is_in_the_guide():
    missing = sorted(name for name in env_example_names() if not re.search(rf"`{name}`", GUIDE))
    assert missing == [], f"README.pt-BR.md does not mention {missing}"


def test_every_setting_in_the_guides_table_is_in_env_example():
    names = guide_table_names()
    assert len(names) > 50  # the table was found and read
    assert sorted(names - env_example_names()) == []


def test_every_bot_setting_is_in_env_example():
    fields = {field.upper() for field in config.Settings.__dataclass_fields__}
    assert sorted(fields - env_example_names()) == []


def test_the_readme_links_the_guide_at_the_top():
    assert "(README.pt-BR.md)" in (ROOT / "README.md").read_text(encoding="utf-8").split("\n## ", 1)[0]
