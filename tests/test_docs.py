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
        ".venv/bin/pytest -n auto",
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


DOC_EXAMPLES = [
    (doc.name, m.group(1), m.group(2))
    for doc in sorted((ROOT / "docs").glob("*.md"))
    for m in re.finditer(r"```python\n# (test_\w+)\.py\n(.*?)```", doc.read_text(), re.S)
]


def doc_files(doc: str) -> dict[str, str]:
    """The files a doc's examples need: blocks that start with ``# pytest.ini`` or
    ``-- schema.sql`` (a file name alone on the first line)."""
    text = (ROOT / "docs" / doc).read_text()
    found = re.finditer(r"```(?:ini|sql)\n(?:#|--) ([\w.-]+)\n(.*?)```", text, re.S)
    return {m.group(1): m.group(2) for m in found}


@pytest.mark.parametrize(
    ("doc", "name", "code"), DOC_EXAMPLES, ids=[f"{d}:{n}" for d, n, _ in DOC_EXAMPLES]
)
def test_docs_examples_run(
    pytester: pytest.Pytester, runtime: Path, doc: str, name: str, code: str
) -> None:
    """Every ``# test_*.py`` example in docs/ is a test module that passes as written."""
    for file_name, text in doc_files(doc).items():
        (pytester.path / file_name).write_text(text)
    pytester.makepyfile(**{name: code})
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) > 0, result.stdout.str()
    result.assert_outcomes(passed=outcomes["passed"])


def test_docs_have_examples() -> None:
    assert {doc for doc, _, _ in DOC_EXAMPLES} >= {
        "aws-secrets.md",
        "servers-and-roles.md",
        "migrating.md",
        "frozen-time.md",
        "async.md",
        "scenarios.md",
    }
