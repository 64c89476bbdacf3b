"""Tests that run as the application's own role: grants apply, workers stay apart, and no
password reaches any output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pgsb_helpers import clean_env
from pgsb_helpers import pgsandbox
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect

SCHEMA = """
CREATE TABLE orders (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, total numeric NOT NULL);
CREATE TABLE audit_log (id serial PRIMARY KEY, what text NOT NULL);
INSERT INTO audit_log (what) VALUES ('schema built');
GRANT SELECT, INSERT ON orders TO app;
GRANT SELECT ON audit_log TO app;
"""

TESTS = """
import os
import psycopg
import pytest

ROLE = os.environ.get("EXPECTED_ROLE", "app")


def test_the_test_runs_as_the_role_not_as_a_superuser(pg):
    user = pg.fetchval("SELECT current_user")
    assert user == ROLE or user.startswith(ROLE + "_gw")
    assert pg.fetchval("SELECT pg_has_role(current_user, %s, 'member')", [ROLE])
    assert pg.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False


def test_what_the_grants_allow_works(pg):
    pg.execute("INSERT INTO orders (total) VALUES (9.50)")
    pg.conn.commit()
    assert pg.fetchval("SELECT count(*) FROM orders") == 1
    assert pg.fetchval("SELECT what FROM audit_log") == "schema built"


def test_what_the_grants_do_not_allow_is_refused(pg):
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="audit_log"):
        pg.execute("INSERT INTO audit_log (what) VALUES ('forged')")
    pg.conn.rollback()
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="orders"):
        pg.execute("DELETE FROM orders")
    pg.conn.rollback()
    assert pg.fetchval("SELECT count(*) FROM orders") == 0


@pytest.mark.asyncio
async def test_the_async_connection_acts_as_the_role(pg_async_conn):
    await pg_async_conn.execute("INSERT INTO orders (total) VALUES (1)")
    await pg_async_conn.commit()  # under transaction isolation, a savepoint
    cur = await pg_async_conn.execute("SELECT current_user, count(*) FROM orders GROUP BY 1")
    user, n = await cur.fetchone()
    assert user.startswith(ROLE) and n == 1


@pytest.mark.asyncio
async def test_asyncpg_acts_as_the_role(pg_asyncpg):
    await pg_asyncpg.execute("INSERT INTO orders (total) VALUES (2)")
    assert (await pg_asyncpg.fetchval("SELECT current_user")).startswith(ROLE)
    with pytest.raises(Exception, match="permission denied"):
        await pg_asyncpg.execute("DELETE FROM orders")


def test_sqlalchemy_and_frozen_time_act_as_the_role(pg, pg_session):
    from sqlalchemy import text

    pg.freeze_time("2001-02-03 04:05:06")  # pgsandbox's own work: a superuser's
    pg_session.execute(text("INSERT INTO orders (total) VALUES (3)"))
    pg_session.commit()
    assert pg_session.execute(text("SELECT current_user")).scalar().startswith(ROLE)
    assert pg_session.execute(text("SELECT now()::date::text")).scalar() == "2001-02-03"
"""

N_TESTS = 6  # in TESTS

URL_TESTS = """
import psycopg
import pytest


@pytest.mark.pg(isolation="{isolation}")
def test_pg_url_logs_in_as_the_role(pg, tmp_path_factory):
    pg.execute("INSERT INTO orders (total) VALUES (1)")
    pg.conn.commit()
    with psycopg.connect(pg.url) as other:
        user, session_user, n = other.execute(
            "SELECT current_user, session_user, (SELECT count(*) FROM orders)"
        ).fetchone()
    assert user.startswith("app") and n == 1
    with open("{urls}", "a") as f:  # for the outer test's scan: never printed
        f.write(pg.url + "\\n")
    print("the session user is", session_user)


@pytest.mark.pg(isolation="{isolation}")
def test_a_failure_report_shows_no_password(pg):
    print(pg)
    assert pg.fetchval("SELECT count(*) FROM orders") == 42
"""


def _project(pytester: pytest.Pytester, *ini: str) -> None:
    (pytester.path / "schema.sql").write_text(SCHEMA)
    lines = ["[pytest]", "pg_schema = sql:schema.sql", "pg_role = app", *ini]
    lines.append("asyncio_default_fixture_loop_scope = function")
    pytester.makeini("\n".join(lines))
    pytester.makepyfile(test_role=TESTS)


@pytest.mark.parametrize("isolation", ["transaction", "clone", "reset"])
def test_tests_run_as_the_role_with_its_grants(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, isolation: str
) -> None:
    clean_env(monkeypatch)
    _project(pytester, f"pg_isolation = {isolation}")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=N_TESTS)


def test_psycopg2_sessions_act_as_the_role(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_env(monkeypatch)
    _project(pytester)
    result = pytester.runpytest_subprocess("--pg-driver=psycopg2", "-k", "sqlalchemy")
    result.assert_outcomes(passed=1)


BARRIER = """
import json
import os
import time

import psycopg
import pytest


@pytest.mark.pg(isolation="clone")
def test_a_worker_cannot_reach_another_workers_databases(pg, worker_id):
    # Wait (with a deadline) until both workers have their databases.
    folder = os.environ["BARRIER_DIR"]
    open(os.path.join(folder, worker_id), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(folder)) < 2:
        assert time.monotonic() < deadline, "the other worker never came"
        time.sleep(0.05)
    me = pg.fetchval("SELECT current_user")
    assert me.startswith(f"app_{worker_id}_")  # and the run's id
    other = "gw1" if worker_id == "gw0" else "gw0"
    theirs = [
        r[0] for r in pg.fetchall(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"pgsandbox_%_{other}_%"]
        )
    ]
    assert theirs, "the other worker has databases"
    for name in theirs:
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(pg.url.replace(pg.dbname, name, 1)).close()
    # Its own database it may reach through pg.url, as its own role.
    with psycopg.connect(pg.url) as conn:
        assert conn.execute("SELECT session_user").fetchone()[0] == me
"""


def test_each_worker_has_a_role_of_its_own(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env(monkeypatch)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    monkeypatch.setenv("BARRIER_DIR", str(barrier))
    _project(pytester, "pg_role_per_worker = true")
    pytester.makepyfile(test_barrier=BARRIER)
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "each")
    result.assert_outcomes(passed=(N_TESTS + 1) * 2)


def test_no_password_reaches_any_output(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runtime: Path
) -> None:
    """(In a runtime folder of its own: the kept database keeps its server running.)"""
    clean_env(monkeypatch)
    urls = tmp_path / "urls.txt"
    _project(pytester, "pg_tcp = true")
    pytester.makepyfile(test_url=URL_TESTS.format(isolation="clone", urls=urls))
    junit = tmp_path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "-rA", "-v", "--pg-keep=failed", f"--junitxml={junit}", "--pg-info"
    )
    assert result.ret == 0  # --pg-info prints the settings and stops
    log = tmp_path / "run.log"
    result = pytester.runpytest_subprocess(
        "-rA",
        "-v",
        "--pg-keep=failed",
        f"--junitxml={junit}",
        f"--log-file={log}",
        "--log-file-level=DEBUG",
        "--log-level=DEBUG",
    )
    result.assert_outcomes(passed=N_TESTS + 1, failed=1)
    result.stdout.fnmatch_lines(["*database kept: postgresql://app:***@127.0.0.1:*"])
    passwords = {ConnInfo.from_conninfo(url).password for url in urls.read_text().split()}
    assert passwords
    assert None not in passwords
    output = result.stdout.str() + result.stderr.str() + junit.read_text() + log.read_text()
    assert "DEBUG" in log.read_text()  # the log did capture something
    for password in passwords:
        assert password
        assert password not in output
    doctor = pgsandbox(pytester, "doctor")
    assert not any(p and p in doctor.stdout.str() + doctor.stderr.str() for p in passwords)
    second = pytester.runpytest_subprocess("-k", "logs_in", "-s")
    second.assert_outcomes(passed=1)
    again = {ConnInfo.from_conninfo(url).password for url in urls.read_text().split()}
    assert len(again) == 2, "every run has fresh passwords"


def test_an_existing_role_that_is_not_ours_is_used_without_its_password(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, existing: LocalCluster
) -> None:
    clean_env(monkeypatch)
    with connect(existing.admin) as conn:
        conn.execute("CREATE ROLE app NOLOGIN")
    urls = pytester.path / "urls.txt"
    _project(pytester)
    pytester.makepyfile(test_url=URL_TESTS.format(isolation="reset", urls=urls))
    result = pytester.runpytest_subprocess(f"--pg-url={existing.admin.url()}", "-s")
    result.assert_outcomes(passed=N_TESTS + 1, failed=1)
    result.stdout.fnmatch_lines(["*the session user is postgres*"])
    with connect(existing.admin) as conn:
        login = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app'").fetchone()
    assert login == (False,), "a role that is not ours is never changed"
    assert re.search(r"options=-c%20role%3Dapp", urls.read_text())


def test_gc_drops_the_worker_roles_of_a_killed_run(
    pytester: pytest.Pytester, existing: LocalCluster
) -> None:
    import subprocess
    import sys

    from pytest_pgsandbox._engine.servers import roles

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    label: dict[str, object] = {"kind": "role", "run": "r1", "pid": int(dead.stdout)}
    with connect(existing.admin) as conn:
        for worker in ("gw0", "gw1"):
            roles.prepare(conn, "app", secret="s", server_is_ours=False, worker=worker, label=label)
        assert [name for name, _ in roles.worker_roles(conn)] == ["app_gw0_r1", "app_gw1_r1"]
    gc = pgsandbox(pytester, "gc", "--url", existing.admin.url())
    gc.stdout.fnmatch_lines(["reaped role app_gw0_r1 (a worker's role; its run has ended)"])
    with connect(existing.admin) as conn:
        left = {
            r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'app%'")
        }
    assert left == {"app"}  # the role the schema grants to stays, like a template
