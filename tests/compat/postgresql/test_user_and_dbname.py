"""``user``, ``password`` and ``dbname`` of pytest-postgresql's factories are honoured: the
tests log in as that user, to a database of that name (a worker's id appended under xdist)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgsb_helpers import pgsandbox
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.urls import connect

CONFTEST = """
import psycopg
from pytest_pgsandbox.postgresql import factories


def load(**kwargs):
    with psycopg.connect(**kwargs) as conn:
        assert conn.info.user == "app", conn.info.user  # loaders log in as the user too
        conn.execute("CREATE TABLE stories (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO stories (name) VALUES ('Silmarillion'), ('The Expanse')")


def load_plain(**kwargs):
    with psycopg.connect(**kwargs) as conn:
        conn.execute("CREATE TABLE stories (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO stories (name) VALUES ('Silmarillion'), ('The Expanse')")


app_proc = factories.postgresql_proc(user="app", password="s3cret-pw", load=[load])
postgresql = factories.postgresql("app_proc", dbname="shop")
second = factories.postgresql("app_proc", dbname="shop")
plain_proc = factories.postgresql_proc(load=[load_plain])
plain = factories.postgresql("plain_proc")
"""

TESTS = """
import os

import psycopg
import pytest

from pytest_pgsandbox.postgresql import DatabaseJanitor

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


@pytest.mark.parametrize("n", range(4))
def test_the_user_and_the_name(postgresql, app_proc, n):
    assert postgresql.info.user == app_proc.user == "app"
    assert app_proc.password == "s3cret-pw"
    assert postgresql.info.dbname == "shop" + WORKER
    assert app_proc.dbname == "tests" + WORKER
    # what the user owns: the database, and the tables load= made
    row = postgresql.execute(
        "SELECT pg_get_userbyid(datdba), (SELECT tableowner FROM pg_tables "
        "WHERE tablename = 'stories'), (SELECT rolsuper FROM pg_roles "
        "WHERE rolname = current_user) FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    assert row == ("app", "app", False)
    assert postgresql.execute("SELECT count(*) FROM stories").fetchone() == (2,)
    postgresql.execute("INSERT INTO stories (name) VALUES ('Dune')")
    postgresql.execute("CREATE TABLE notes (id int)")
    postgresql.commit()
    # the name is real: code that connects by it sees the test's own rows
    with psycopg.connect(host=app_proc.host, port=app_proc.port, user=app_proc.user,
                         password=app_proc.password, dbname="shop" + WORKER) as other:
        assert other.execute("SELECT count(*) FROM stories").fetchone() == (3,)


def test_rows_written_and_the_session_changed(plain):
    plain.execute("INSERT INTO stories (name) VALUES ('Dune')")
    plain.execute("SET application_name = 'left behind'")
    plain.commit()
    plain.autocommit = True
    os.environ["LAST_PID"] = str(plain.info.backend_pid)


def test_the_next_test_gets_the_name_fresh(plain):
    assert plain.info.dbname == "tests" + WORKER
    assert plain.execute("SELECT count(*) FROM stories").fetchone() == (2,)
    assert plain.execute("SHOW application_name").fetchone() != ("left behind",)
    assert plain.autocommit is False
    if not WORKER:  # the same copy and session, handed on (in file order)
        assert str(plain.info.backend_pid) == os.environ["LAST_PID"]


def test_two_fixtures_that_want_one_name(postgresql, second):
    names = {postgresql.info.dbname, second.info.dbname}
    assert len(names) == 2 and "shop" + WORKER in names


def test_a_janitor_as_the_user(app_proc):
    name = "janitor_db" + WORKER
    with DatabaseJanitor(user=app_proc.user, password=app_proc.password, host=app_proc.host,
                         port=app_proc.port, dbname=name, template_dbname=app_proc.template_dbname,
                         version=app_proc.version):
        with psycopg.connect(host=app_proc.host, port=app_proc.port, user=app_proc.user,
                             password=app_proc.password, dbname=name) as conn:
            assert conn.execute("SELECT count(*) FROM stories").fetchone() == (2,)


def test_without_a_user_the_server_s_own(plain, plain_proc):
    assert plain.info.dbname == plain_proc.dbname == "tests" + WORKER
    assert plain.info.user == plain_proc.user == "postgres"
"""


@pytest.fixture
def project(pytester: pytest.Pytester, runtime: Path) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_named=TESTS)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


@pytest.mark.parametrize("workers", [0, 2])
def test_user_password_and_dbname(project: pytest.Pytester, workers: int) -> None:
    args = ["-n", str(workers)] if workers else []
    result = project.runpytest_subprocess("-W", "error", *args)
    result.assert_outcomes(passed=9)
    assert "s3cret-pw" not in result.stdout.str() + result.stderr.str()


def test_the_options_name_the_user(pytester: pytest.Pytester, runtime: Path) -> None:
    """``--postgresql-user`` / ``postgresql_password`` with the default fixtures; without a
    password the role gets one made for the run."""
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\npg_pytest_postgresql = true\n"
    )
    pytester.makepyfile(
        """
        import psycopg

        def test_it(postgresql, postgresql_proc):
            assert postgresql.info.user == postgresql_proc.user == "reporter"
            assert postgresql.info.dbname == "reports"
            assert postgresql_proc.password and len(postgresql_proc.password) >= 24
            with psycopg.connect(**postgresql.info.get_parameters(),
                                 password=postgresql_proc.password) as conn:
                assert conn.execute("SELECT current_user").fetchone() == ("reporter",)
        """
    )
    result = pytester.runpytest_subprocess(
        "--postgresql-user=reporter", "--postgresql-dbname=reports"
    )
    result.assert_outcomes(passed=1)


def test_two_passwords_for_one_user_are_a_usage_error(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.makepyfile(
        """
        from pytest_pgsandbox.postgresql import factories

        one = factories.postgresql_proc(user="app", password="a")
        two = factories.postgresql_proc(user="app", password="b")

        def test_it(one, two):
            pass
        """
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*one and two both make the role 'app' with different*"])


NOPROC = """
from pytest_pgsandbox.postgresql import factories

existing = factories.postgresql_noproc(
    host={host!r}, port={port}, user="clerk", password="clerk-pw"
)
postgresql = factories.postgresql("existing", dbname={wanted!r})


def test_one(postgresql, existing):
    assert postgresql.info.user == existing.user == "clerk"
    assert existing.password == "clerk-pw"
    assert {check}
    postgresql.execute("CREATE TABLE t (id int)")  # the user owns the test's database
    postgresql.commit()


def test_two(postgresql):
    assert {check}
    assert postgresql.execute("SELECT to_regclass('t')").fetchone() == (None,)
"""


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_noproc_logs_in_as_its_user_and_names_leave_others_alone(
    pytester: pytest.Pytester, existing: LocalCluster
) -> None:
    """On an existing server (its superuser's URL as pg_url): the tests log in with the
    noproc's credentials; a database of the wanted name left by a run that ended is dropped,
    one pgsandbox did not make is left alone (the tests get generated names, and a warning
    says why), one of a run still going only with --postgresql-drop-test-database."""
    admin = existing.admin
    with connect(admin) as conn:
        conn.execute("CREATE ROLE clerk LOGIN PASSWORD 'clerk-pw'")  # no CREATEDB
        provision.create_database(conn, "ledger", {"kind": "clone", "run": "gone"})
        label = provision.make_label({"kind": "clone", "run": "gone"})
        label = label.replace(f'"pid":{os.getpid()}', f'"pid":{_dead_pid()}')
        provision.relabel(conn, "ledger", provision.parse_label(label) or {})
        conn.execute("CREATE DATABASE mine")  # someone else's: no label
    url = f"--pg-url={admin.url()}"
    where = {"host": admin.host, "port": admin.port}
    try:
        named = "postgresql.info.dbname == 'ledger'"
        pytester.makepyfile(NOPROC.format(**where, wanted="ledger", check=named))
        pytester.runpytest_subprocess(url).assert_outcomes(passed=2)

        generated = "postgresql.info.dbname.startswith('pgsandbox_clone_')"
        pytester.makepyfile(NOPROC.format(**where, wanted="mine", check=generated))
        result = pytester.runpytest_subprocess(url)
        result.assert_outcomes(passed=2, warnings=1)
        result.stdout.fnmatch_lines(
            ["*a database named 'mine' exists on the server and pgsandbox did not create*"]
        )
        # labelled by a process that is still going (this one): only the flag drops it
        with connect(admin) as conn:
            provision.create_database(conn, "ledger", {"kind": "clone", "run": "going"})
        pytester.makepyfile(NOPROC.format(**where, wanted="ledger", check=named))
        pytester.runpytest_subprocess(url, "--postgresql-drop-test-database").assert_outcomes(
            passed=2
        )
        with connect(admin) as conn:
            names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            comment = conn.execute(
                "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'clerk'"
            ).fetchone()
        assert "mine" in names
        assert "ledger" not in names
        assert not any(n.startswith("pgsandbox_clone") for n in names), names
        assert comment == (None,)  # the role is the server's: never changed
    finally:
        with connect(admin) as conn:
            conn.execute("DROP DATABASE IF EXISTS mine")
            conn.execute("DROP OWNED BY clerk")
            conn.execute("DROP ROLE IF EXISTS clerk")


def test_gc_drops_the_user_role_of_a_run_that_ended(
    pytester: pytest.Pytester, existing: LocalCluster
) -> None:
    """The role made for ``user=`` stays on a server that outlives the run (it is reused by
    the next run); ``pgsandbox gc`` drops it once its run has ended."""
    pytester.makepyfile(
        """
        from pytest_pgsandbox.postgresql import factories

        reporter_proc = factories.postgresql_proc(user="reporter")
        postgresql = factories.postgresql("reporter_proc")

        def test_it(postgresql):
            assert postgresql.info.user == "reporter"
        """
    )
    pytester.runpytest_subprocess(f"--pg-url={existing.admin.url()}").assert_outcomes(passed=1)
    query = "SELECT count(*) FROM pg_roles WHERE rolname = 'reporter'"
    with connect(existing.admin) as conn:
        assert conn.execute(query).fetchone() == (1,)
    gc = pgsandbox(pytester, "gc", "--url", existing.admin.url())
    gc.stdout.fnmatch_lines(["*role reporter (a pytest-postgresql user's role; its run has ended)"])
    with connect(existing.admin) as conn:
        assert conn.execute(query).fetchone() == (0,)
