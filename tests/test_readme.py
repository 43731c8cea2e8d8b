"""The README promises: every setting documented, the Quickstart commands, CI's test command."""
from __future__ import annotations

import re
from pathlib import Path

from chatapp.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _config_table_names() -> set[str]:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section, re.M))


def test_every_setting_is_in_the_readme_table():
    documented = _config_table_names()
    missing = [s.name for s in SETTINGS if s.name not in documented]
    assert not missing, f"add these settings to the README's configuration table: {missing}"
    unknown = documented - {s.name for s in SETTINGS}
    assert not unknown, f"the README documents settings that do not exist: {unknown}"


def _quickstart_commands() -> list[str]:
    part = README.split("## Quickstart", 1)[1]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", part, re.S)[:2]]


def test_quickstart_has_the_two_commands():
    run, test = _quickstart_commands()
    assert "quart --app chatapp run" in run and "pip install -e ." in run
    assert "pytest" in test and ".[test]" in test


def test_ci_runs_the_readme_test_command():
    _, test = _quickstart_commands()
    assert test in (ROOT / ".ci" / "run").read_text()
