"""Frozen time: Python's clock and the database's move together, under every isolation.

On the server the plugin starts (the clock is built into every template) and on an existing
server, where a test database made without a schema gets the clock when time is first frozen.
"""

from __future__ import annotations

import pytest

from pytest_pgsandbox._engine.servers.cluster import LocalCluster

SCHEMA = """
CREATE TABLE events (
    id serial PRIMARY KEY,
    kind text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    stamped_at timestamptz
);
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.stamped_at := now(); RETURN NEW; END $$;
CREATE TRIGGER stamp BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION stamp();
"""
TESTS = 7 * 3
SKIPPED = 1  # other connections under transaction isolation


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "schema.sql").write_text(SCHEMA)
    pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
    pytester.copy_example("frozen_time.py")
    (pytester.path / "frozen_time.py").rename(pytester.path / "test_frozen_time.py")
    return pytester


def test_every_isolation(project: pytest.Pytester, runtime: object) -> None:
    result = project.runpytest_subprocess("--pg-verify-isolation")
    result.assert_outcomes(passed=TESTS - SKIPPED, skipped=SKIPPED)


def test_under_xdist_one_workers_clock_is_its_own(
    project: pytest.Pytester, runtime: object
) -> None:
    result = project.runpytest_subprocess("-n", "2", "--pg-verify-isolation")
    result.assert_outcomes(passed=TESTS - SKIPPED, skipped=SKIPPED)


def test_existing_server(project: pytest.Pytester, existing: LocalCluster) -> None:
    result = project.runpytest_subprocess(f"--pg-url={existing.admin.url()}")
    result.assert_outcomes(passed=TESTS - SKIPPED, skipped=SKIPPED)


def test_existing_server_without_a_schema(
    pytester: pytest.Pytester, existing: LocalCluster
) -> None:
    pytester.makepyfile(
        """
        import datetime as dt

        def test_freeze(pg):
            with pg.freeze_time("1999-12-31 23:59:59"):
                assert pg.fetchval("SELECT now()::date") == dt.date(1999, 12, 31)
                pg.execute("CREATE TABLE t (at timestamptz DEFAULT now())")
                pg.execute("INSERT INTO t DEFAULT VALUES")
                assert pg.fetchval("SELECT at::date FROM t") == dt.date(1999, 12, 31)
        """
    )
    result = pytester.runpytest_subprocess(f"--pg-url={existing.admin.url()}")
    result.assert_outcomes(passed=1)
