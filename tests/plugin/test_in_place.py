"""A role that may not create databases: the tests run in the URL's own database, in place."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgsb_helpers import MATRIX_SCHEMA as SCHEMA
from pgsb_helpers import MATRIX_TESTS as MATRIX
from pgsb_helpers import matrix_outcomes
from pgsb_helpers import matrix_project
from pgsb_helpers import pgsandbox
from pytest_pgsandbox._engine.isolation.inplace import InPlace
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect

PASSWORD = "app-In-Place-7"


@pytest.fixture
def app(existing: LocalCluster) -> ConnInfo:
    """Role ``app`` without CREATEDB, owner of an empty database ``app_test`` made for it."""
    with connect(existing.admin) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE app LOGIN NOCREATEDB PASSWORD {}").format(sql.Literal(PASSWORD))
        )
        conn.execute("CREATE DATABASE app_test OWNER app")
    return dataclasses.replace(existing.admin, user="app", password=PASSWORD, dbname="app_test")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return matrix_project(pytester)


def tables(info: ConnInfo) -> list[str]:
    with connect(info) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND relkind = 'r' ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("isolation", ["reset", "transaction"])
def test_the_isolation_matrix_in_place(
    project: pytest.Pytester, app: ConnInfo, isolation: str
) -> None:
    args = ["isolation_matrix.py", f"--pg-url={app.url()}", f"--pg-isolation={isolation}"]
    expected = matrix_outcomes(isolation)
    first = project.runpytest_subprocess(*args, "--pg-verify-isolation")
    first.assert_outcomes(**expected)
    first.stdout.fnmatch_lines(
        [
            "postgresql: the role app may not create databases: tests run in app_test in place "
            "(template built: *"
        ]
    )
    assert PASSWORD not in first.stdout.str()
    # The next run finds the schema built, and the rows as the schema made them.
    second = project.runpytest_subprocess(*args, "-p", "no:randomly")
    second.assert_outcomes(**expected)
    second.stdout.fnmatch_lines(["*tests run in app_test in place (template reused: *"])
    with connect(app) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (5,)
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (3,)


def test_a_changed_schema_is_rebuilt_and_a_killed_run_cleaned_up(
    project: pytest.Pytester, app: ConnInfo
) -> None:
    project.makepyfile(
        test_count="""
        def test_count(pg):
            assert pg.fetchval("SELECT count(*) FROM users") == 5
        """
    )
    args = [f"--pg-url={app.url()}", "--pg-isolation=reset", "test_count.py"]
    project.runpytest_subprocess(*args).assert_outcomes(passed=1)
    with connect(app) as conn:  # what a run that was killed mid-test would leave
        conn.execute("INSERT INTO users (name) VALUES ('left behind')")
    project.runpytest_subprocess(*args).assert_outcomes(passed=1)
    with connect(app) as conn:  # bookkeeping damaged by hand: built again
        conn.execute("DROP FUNCTION _pgsandbox.reset(int)")
        conn.execute("INSERT INTO users (name) VALUES ('left behind')")
    project.runpytest_subprocess(*args).assert_outcomes(passed=1)

    (project.path / "schema.sql").write_text(
        SCHEMA.replace("CREATE TABLE orders", "CREATE TABLE invoices").replace(
            "INTO orders", "INTO invoices"
        )
    )
    result = project.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*tests run in app_test in place (template built: *"])
    assert tables(app) == ["invoices", "users"]


def test_a_build_that_failed_half_way_is_cleared_next_time(
    project: pytest.Pytester, app: ConnInfo
) -> None:
    folder = project.path / "schema"
    folder.mkdir()
    (folder / "01_tables.sql").write_text(SCHEMA)
    (folder / "02_broken.sql").write_text("SELECT no_such_function();\n")
    project.makeini("[pytest]\npg_schema = sql:schema\n")
    project.makepyfile(
        "def test_x(pg):\n    assert pg.fetchval('SELECT count(*) FROM users') == 5\n"
    )
    args = [f"--pg-url={app.url()}", "--pg-isolation=reset"]
    failed = project.runpytest_subprocess(*args)
    assert failed.ret != 0
    failed.stdout.fnmatch_lines(["*no_such_function*"])
    assert tables(app) == ["orders", "users"]  # half a schema, still marked as pgsandbox's
    (folder / "02_broken.sql").write_text("CREATE TABLE fixed (id int);\n")
    project.runpytest_subprocess(*args).assert_outcomes(passed=1)
    assert tables(app) == ["fixed", "orders", "users"]


def test_clone_says_what_to_use_instead(project: pytest.Pytester, app: ConnInfo) -> None:
    result = project.runpytest_subprocess(
        "isolation_matrix.py", f"--pg-url={app.url()}", "--pg-isolation=clone"
    )
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        [
            "*isolation=\"clone\" makes a database per test, and the role 'app' may not create "
            'databases*Use isolation "reset"*ALTER ROLE app CREATEDB*'
        ]
    )
    assert tables(app) == []


def test_a_database_the_role_does_not_own_is_refused(
    project: pytest.Pytester, existing: LocalCluster, app: ConnInfo
) -> None:
    with connect(existing.admin) as conn:
        conn.execute("CREATE DATABASE shared_test")
    url = dataclasses.replace(app, dbname="shared_test").url()
    result = project.runpytest_subprocess("isolation_matrix.py", f"--pg-url={url}")
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        [
            "*the role 'app' may not create databases on this server*belongs to 'postgres'*"
            "CREATE DATABASE app_test OWNER app*"
        ]
    )


def test_one_run_at_a_time(project: pytest.Pytester, app: ConnInfo) -> None:
    """xdist workers would undo each other's rows: the second is told why it cannot."""
    result = project.runpytest_subprocess(
        "isolation_matrix.py", f"--pg-url={app.url()}", "--pg-isolation=reset", "-n", "2"
    )
    result.stdout.fnmatch_lines(
        ["*another test run is using the database 'app_test' in place*drop -n, or grant CREATEDB*"]
    )
    assert PASSWORD not in result.stdout.str()


def test_the_maintenance_database_says_how_to_run_in_place(
    project: pytest.Pytester, app: ConnInfo
) -> None:
    url = dataclasses.replace(app, dbname="postgres").url()
    result = project.runpytest_subprocess("isolation_matrix.py", f"--pg-url={url}")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*may not create databases*run in it in place*"])


def test_no_tables_are_left_outside_the_database(
    project: pytest.Pytester, existing: LocalCluster, app: ConnInfo, runtime: Path
) -> None:
    project.runpytest_subprocess(
        "isolation_matrix.py", f"--pg-url={app.url()}", "--pg-isolation=reset"
    ).assert_outcomes(passed=MATRIX)
    with connect(existing.admin) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert "app_test" in names
    assert [n for n in names if n.startswith("pgsandbox_")] == []


def test_doctor_says_the_tests_run_in_place(
    pytester: pytest.Pytester, app: ConnInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSANDBOX_URL", app.url())
    result = pgsandbox(pytester, "doctor")
    result.stdout.fnmatch_lines(
        [
            "*the role 'app' may not create databases: the tests run in 'app_test' in place*",
            "doctor: everything needed works",
        ]
    )
    monkeypatch.setenv("PGSANDBOX_URL", dataclasses.replace(app, dbname="postgres").url())
    result = pgsandbox(pytester, "doctor")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*may not create databases: grant it CREATEDB*"])
    assert PASSWORD not in result.stdout.str()


def test_transaction_and_reset_tests_share_the_database(
    project: pytest.Pytester, app: ConnInfo
) -> None:
    """A rebuild in place ends the idle connection of transaction isolation: it reconnects."""
    project.makepyfile(
        test_mix="""
        import pytest

        def test_a_rolled_back(pg):
            pg.execute("DELETE FROM orders")
            assert pg.fetchval("SELECT count(*) FROM orders") == 0

        @pytest.mark.pg(isolation="reset")
        def test_b_ddl_rebuilds(pg):
            pg.execute("ALTER TABLE users ADD COLUMN age int")
            pg.conn.commit()

        def test_c_rolled_back_again(pg):
            assert pg.fetchval("SELECT count(*) FROM orders") == 3
            assert pg.fetchval(
                "SELECT count(*) FROM information_schema.columns WHERE column_name = 'age'"
            ) == 0
        """
    )
    result = project.runpytest_subprocess(
        f"--pg-url={app.url()}", "test_mix.py", "-p", "no:randomly", "--pg-verify-isolation"
    )
    result.assert_outcomes(passed=3)


def test_keep_says_it_cannot_and_the_next_test_starts_clean(
    project: pytest.Pytester, app: ConnInfo
) -> None:
    project.makepyfile(
        test_keep="""
        def test_a_fails(pg):
            pg.execute("INSERT INTO users (name) VALUES ('Farah Haddad')")
            pg.conn.commit()
            assert False

        def test_b_clean(pg):
            assert pg.fetchval("SELECT count(*) FROM users") == 5
        """
    )
    result = project.runpytest_subprocess(
        f"--pg-url={app.url()}",
        "--pg-isolation=reset",
        "--pg-keep=failed",
        "test_keep.py",
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*cannot keep the test's database*Its rows are put back now*"])


def test_a_rebuild_ends_the_tests_sessions_and_not_another_runs(app: ConnInfo) -> None:
    """Another run that is starting on the database is connected for a moment: a rebuild
    (after DDL in a test) leaves that session alone, and ends the tests' own."""

    def fill(info: ConnInfo) -> None:
        with connect(info) as conn:
            conn.execute(SCHEMA)

    place = InPlace(app, "digest-1", fill, "run", 30.0)
    place.open()
    try:
        with connect(app) as starting, psycopg.connect(app.conninfo()) as tests:
            place.rebuild()
            assert starting.execute("SELECT 1").fetchone() == (1,)
            with pytest.raises(psycopg.OperationalError):
                tests.execute("SELECT 1")
    finally:
        place.close()
