"""Switching: the import alone, or the pytest_postgresql setting for the default fixtures; and
with pytest-postgresql installed too, nothing breaks and the header says who provides them."""

from __future__ import annotations

import importlib.util
import os

import pytest

UPSTREAM = importlib.util.find_spec("pytest_postgresql") is not None
if not UPSTREAM and os.environ.get("PGSB_TESTS_NEED_PYTEST_POSTGRESQL"):
    # CI installed it for this module: the test with both installed must run, not skip.
    raise RuntimeError("PGSB_TESTS_NEED_PYTEST_POSTGRESQL is set, and pytest-postgresql is absent")
DEFAULTS = """
def test_defaults(postgresql_proc, postgresql):
    assert type(postgresql_proc).__module__.startswith("pytest_pgsandbox")
    postgresql.execute("CREATE TABLE t (id int)")
    postgresql.commit()
"""


def test_the_setting_provides_the_default_fixtures(
    pytester: pytest.Pytester, runtime: object
) -> None:
    pytester.makepyfile(DEFAULTS)
    result = pytester.runpytest_subprocess("--pg-pytest-postgresql")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["pgsandbox: postgresql, postgresql_proc fixtures: pytest-pgsandbox (pytest_postgresql=*"]
    )


@pytest.mark.skipif(UPSTREAM, reason="pytest-postgresql is installed: it provides them")
def test_without_the_setting_there_are_no_default_fixtures(
    pytester: pytest.Pytester, runtime: object
) -> None:
    pytester.makepyfile(DEFAULTS)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'postgresql_proc' not found*"])


def test_the_options_are_registered_once(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == 0
    assert result.stdout.str().count("--postgresql-postgres-options") == 1


@pytest.mark.skipif(not UPSTREAM, reason="needs pytest-postgresql installed too")
def test_with_pytest_postgresql_installed_too(pytester: pytest.Pytester, runtime: object) -> None:
    pytester.makepyfile(
        """
        from pytest_pgsandbox.postgresql import factories

        mine = factories.postgresql_proc()
        my_client = factories.postgresql("mine")

        def test_ours(my_client):
            my_client.execute("SELECT 1")
        """
    )
    plain = pytester.runpytest_subprocess("--postgresql-dbname=other")
    plain.assert_outcomes(passed=1)
    plain.stdout.fnmatch_lines(
        ["pgsandbox: postgresql, postgresql_proc fixtures: pytest-postgresql*"]
    )
    pytester.makepyfile(test_defaults=DEFAULTS)
    switched = pytester.runpytest_subprocess("--pg-pytest-postgresql")
    switched.assert_outcomes(passed=2)
    switched.stdout.fnmatch_lines(["*pytest-pgsandbox*pytest-postgresql's are overridden*"])


ISOLATION = """
import pytest
from pytest_pgsandbox.postgresql import factories

proc = factories.postgresql_proc(load=[{sql!r}])
by_reset = factories.postgresql("proc", isolation="reset")
by_default = factories.postgresql("proc")


@pytest.mark.parametrize("n", range(3))
def test_reset(by_reset, n):
    assert by_reset.execute("SELECT count(*) FROM test").fetchone() == (1,)
    by_reset.execute("INSERT INTO test (id, num) VALUES (2, 5)")
    by_reset.commit()


@pytest.mark.pg(isolation="transaction")
@pytest.mark.parametrize("n", range(3))
def test_transaction_by_marker(by_default, n):
    assert by_default.execute("SELECT count(*) FROM test").fetchone() == (1,)
    by_default.execute("INSERT INTO test (id, num) VALUES (2, 5)")
    by_default.commit()


def test_reset_database_is_shared(by_reset, request):
    names = request.config.cache.get("names", [])
    request.config.cache.set("names", [*names, by_reset.info.dbname])
"""


def test_reset_and_transaction_where_asked(pytester: pytest.Pytester, runtime: object) -> None:
    from pathlib import Path

    sql = Path(__file__).parent / "sql" / "one_row.sql"
    pytester.makepyfile(ISOLATION.format(sql=str(sql)))
    pytester.runpytest_subprocess().assert_outcomes(passed=7)
