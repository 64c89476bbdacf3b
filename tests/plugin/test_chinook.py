"""The Chinook example (examples/chinook): a schema and generated data, built once, reused."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from pgsb_helpers import clean_env
from pgsb_helpers import leftovers

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chinook"


def test_the_chinook_example_builds_its_template_once(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_env(monkeypatch)
    shutil.copytree(
        EXAMPLE, pytester.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    # An input no earlier run has seen, so that the first run must build the template.
    schema = pytester.path / "db" / "schema.sql"
    schema.write_text(schema.read_text() + f"\n-- {random.getrandbits(64):x}\n")

    first = pytester.runpytest_subprocess("-W", "error")
    first.assert_outcomes(passed=7)
    first.stdout.fnmatch_lines(["postgresql: template built: * in *"])
    digest = next(ln for ln in first.outlines if ln.startswith("postgresql: template")).split()[3]

    second = pytester.runpytest_subprocess("--pg-verify-isolation", "-W", "error")
    second.assert_outcomes(passed=7)
    second.stdout.fnmatch_lines([f"postgresql: template reused: {digest} (no migrations ran)"])
    assert leftovers(runtime) == []
