"""driver=psycopg2: pg_engine and pg_session for code written against psycopg2."""

from __future__ import annotations

from pathlib import Path

import pytest

SCHEMA = """
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO users (name) VALUES ('Alice Chen'), ('Bob Okafor');
"""


@pytest.mark.parametrize("isolation", ["transaction", "reset", "clone"])
def test_psycopg2_under_each_isolation(
    pytester: pytest.Pytester, runtime: Path, isolation: str
) -> None:
    (pytester.path / "schema.sql").write_text(SCHEMA)
    pytester.makeini(
        "[pytest]\npg_schema = sql:schema.sql\npg_driver = psycopg2\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    pytester.copy_example("psycopg2_session.py")
    (pytester.path / "psycopg2_session.py").rename(pytester.path / "test_psycopg2_session.py")
    result = pytester.runpytest_subprocess(
        f"--pg-isolation={isolation}", "--pg-verify-isolation", "-W", "error"
    )
    result.assert_outcomes(passed=3)


def test_missing_psycopg2_names_the_extra(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makeconftest("import sys\n\nsys.modules['psycopg2'] = None  # not installed\n")
    pytester.makepyfile("def test_engine(pg_session):\n    pass\n")
    result = pytester.runpytest_subprocess("--pg-driver=psycopg2")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pip install 'pytest-pgsandbox[[]psycopg2[]]'*"])
