"""The README cannot rot: its settings table is the real one and its example runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_pgsandbox.settings import markdown_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = first_block.group(1).strip().splitlines()
    assert commands == [
        'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"',
        ".venv/bin/pytest",
    ]
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci, f".ci/run must run exactly: {command}"


def test_settings_table_matches_the_code() -> None:
    block = README.split("<!-- settings:start -->")[1].split("<!-- settings:end -->")[0]
    assert block.strip() == markdown_table(), (
        "README's settings table is out of date; regenerate it with: python -c "
        '"from pytest_pgsandbox.settings import markdown_table; print(markdown_table())"'
    )


def test_quick_start_runs(pytester: pytest.Pytester, runtime: Path) -> None:
    example = re.search(r"```python\n(.*?)```", README, re.S)
    assert example is not None
    pytester.makepyfile(test_users=example.group(1))
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=2)
