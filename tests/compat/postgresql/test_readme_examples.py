"""pytest-postgresql's README examples (``tests/examples/postgresql_readme``: its code with
the import line changed) run forward, reversed and under xdist, on the embedded wheel's
PostgreSQL and on this machine's."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = 13
REVERSE = "\n\ndef pytest_collection_modifyitems(items):\n    items.reverse()\n"


@pytest.fixture
def readme(pytester: pytest.Pytester, runtime: object) -> pytest.Pytester:
    pytester.copy_example("postgresql_readme")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


def test_forward(readme: pytest.Pytester, bin_dir: Path) -> None:
    readme.runpytest_subprocess(f"--pg-bin-dir={bin_dir}").assert_outcomes(passed=TESTS)


def test_reversed(readme: pytest.Pytester) -> None:
    conftest = readme.path / "conftest.py"
    conftest.write_text(conftest.read_text() + REVERSE)
    readme.runpytest_subprocess("--pg-bin-dir=embedded").assert_outcomes(passed=TESTS)


def test_under_xdist(readme: pytest.Pytester) -> None:
    result = readme.runpytest_subprocess("--pg-bin-dir=embedded", "-n", "2")
    result.assert_outcomes(passed=TESTS)
