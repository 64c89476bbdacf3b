"""pytest-pgsql's API: a module written for pytest-pgsql runs with only its import changed.

``examples/pgsql_style`` uses both fixtures, every helper, custom fixtures made with
``create_fixture`` and ``create_engine_fixture``, and ``freeze_time``. It runs with the isolation
verifier on, so a test that leaves anything behind (rows, columns, tables, settings) fails.
"""

from __future__ import annotations

import pytest

from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.urls import connect

TESTS = 24


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.copy_example("pgsql_style")
    pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
    return pytester


def test_a_pytest_pgsql_module_passes(project: pytest.Pytester, runtime: object) -> None:
    result = project.runpytest_subprocess("--pg-extensions=pg_trgm", "--pg-verify-isolation")
    result.assert_outcomes(passed=TESTS)


def test_reversed_and_under_xdist(project: pytest.Pytester, runtime: object) -> None:
    (project.path / "conftest.py").write_text(
        (project.path / "conftest.py").read_text()
        + "\n\ndef pytest_collection_modifyitems(items):\n    items.reverse()\n"
    )
    result = project.runpytest_subprocess(
        "--pg-extensions=pg_trgm", "--pg-verify-isolation", "-n", "2"
    )
    result.assert_outcomes(passed=TESTS)


def test_on_an_existing_server_only_templates_remain(
    project: pytest.Pytester, existing: LocalCluster
) -> None:
    result = project.runpytest_subprocess(
        f"--pg-url={existing.admin.url()}", "--pg-extensions=pg_trgm"
    )
    result.assert_outcomes(passed=TESTS)
    with connect(existing.admin) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    ours = [n for n in names if n.startswith("pgsandbox") and n != "pgsandbox"]
    assert ours
    assert all(n.startswith("pgsandbox_tpl_") for n in ours), ours


def test_pg_and_postgresql_db_share_one_database(
    pytester: pytest.Pytester, runtime: object
) -> None:
    pytester.makepyfile(
        """
        def test_both(pg, postgresql_db):
            assert pg.isolation == "reset"
            assert postgresql_db.postgresql_url == pg.info.url(driver="psycopg")
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_freeze_time_needs_one_database_fixture(pytester: pytest.Pytester, runtime: object) -> None:
    pytester.makepyfile(
        """
        import pytest_pgsandbox.pgsql as pytest_pgsql

        @pytest_pgsql.freeze_time("2020-01-01")
        def test_no_database():
            pass
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*exactly *one* database fixture*'test_no_database' has 0."])


def test_the_same_public_names_as_pytest_pgsql() -> None:
    import pytest_pgsandbox.pgsql as pgsql

    for name in (
        "PostgreSQLTestDB",
        "TransactedPostgreSQLTestDB",
        "PostgreSQLTestDBBase",
        "create_engine_fixture",
        "freeze_time",
        "SQLAlchemyFreezegun",
    ):
        assert name in pgsql.__all__
        assert getattr(pgsql, name) is not None
    for error in ("Error", "DatabaseRestoreFailedError", "DatabaseIsDirtyError"):
        assert issubclass(getattr(pgsql.errors, error), pgsql.Error)
    assert issubclass(pgsql.errors.NoSnapshotAvailableError, pgsql.DatabaseRestoreFailedError)


def test_postgresql_db_without_a_superuser_runs_on_reset(
    pytester: pytest.Pytester, existing: LocalCluster
) -> None:
    with connect(existing.admin) as conn:
        conn.execute("CREATE ROLE pgsql_app LOGIN CREATEDB PASSWORD 'app-secret-1'")
    url = existing.admin.url().replace(
        f"{existing.admin.user}:{existing.admin.password}@", "pgsql_app:app-secret-1@"
    )
    pytester.makepyfile(
        """
        import pytest
        import sqlalchemy as sqla

        @pytest.mark.parametrize("n", [1, 2])
        def test_commit(postgresql_db, n):
            with postgresql_db.engine.begin() as conn:
                conn.execute(sqla.text("CREATE TABLE t (id int)"))
                conn.execute(sqla.text("INSERT INTO t VALUES (1)"))
            # DDL, so the next test gets a fresh copy: CREATE TABLE t works again
            assert postgresql_db._handle.isolation == "reset"
        """
    )
    result = pytester.runpytest_subprocess(f"--pg-url={url}")
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "database",
            ["PostgreSQLTestDB", "TransactedPostgreSQLTestDB", "create_database_snapshot"],
        ),
        ("time", ["SQLAlchemyFreezegun", "freeze_time"]),
        ("ext", ["create_engine_fixture"]),
        ("errors", ["Error", "DatabaseIsDirtyError", "NoSnapshotAvailableError"]),
    ],
)
def test_pytest_pgsqls_modules_under_both_names(module: str, names: list[str]) -> None:
    import importlib

    ours = importlib.import_module(f"pytest_pgsandbox.pgsql.{module}")
    shim = importlib.import_module(f"pytest_pgsql.{module}")
    for name in names:
        assert name in ours.__all__
        assert getattr(shim, name) is getattr(ours, name)
    import pytest_pgsandbox.pgsql
    import pytest_pgsql

    assert pytest_pgsql.__all__ == pytest_pgsandbox.pgsql.__all__
    assert getattr(pytest_pgsql, module) is shim  # pytest_pgsql.time etc.
