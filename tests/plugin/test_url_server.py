"""An existing server (``url``): our own labelled databases only, and no password shown."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from pytest_pgsandbox import UnsafeOperation
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers.choice import local_cluster
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.settings import Settings

PROBE = """
import json
from pytest_pgsandbox._engine.servers.provision import database_label

def test_runs_in_a_labelled_database_of_its_own(pg):
    name = pg.fetchval("SELECT current_database()")
    assert name.startswith("pgsandbox_session_")
    with pg.conn.cursor() as cur:
        pass
    print("DB:", name)
    pg.execute("CREATE TABLE t (id int)")
    pg.conn.commit()
"""


@pytest.fixture
def existing(settings: Settings) -> Iterator[LocalCluster]:
    """A server that is already running, reached over TCP with a password."""
    server = local_cluster(settings.with_values(bin_dir=Path("embedded"), tcp=True))
    server.start()
    yield server
    server.stop()


def _user_dbs(server: LocalCluster) -> set[str]:
    with connect(server.admin) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate").fetchall()
    return {r[0] for r in rows} - {"postgres", "pgsandbox"}


def test_tests_run_in_a_database_that_is_created_labelled_and_dropped(
    pytester: pytest.Pytester, existing: LocalCluster
) -> None:
    url = existing.admin.url()
    password = existing.admin.password
    assert password
    pytester.makepyfile(PROBE)
    pytester.makeconftest(
        """
        def pytest_sessionfinish(session):
            import psycopg
            from pytest_pgsandbox._engine.servers.provision import labelled_databases
            with psycopg.connect(session.config.getoption("pg_url"), autocommit=True) as c:
                for name, label in labelled_databases(c):
                    print("LABEL:", name, label.get("kind"), label.get("run"))
        """
    )
    result = pytester.runpytest_subprocess(f"--pg-url={url}", "-s")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert password not in out
    assert password not in result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "postgresql: existing server postgresql://postgres:***@127.0.0.1:*/postgres",
            "pgsandbox: url=postgresql://postgres:***@127.0.0.1:* (from the command line*",
        ]
    )
    name = next(ln for ln in result.outlines if "DB:" in ln).split("DB:")[1].split()[0]
    assert any(ln.startswith(f"LABEL: {name} session ") for ln in result.outlines)
    assert _user_dbs(existing) == set(), "the session database is dropped at the end"


def test_databases_without_our_label_are_never_dropped(existing: LocalCluster) -> None:
    with connect(existing.admin) as conn:
        conn.execute("CREATE DATABASE precious")
        with pytest.raises(UnsafeOperation, match="refusing to drop database 'precious'"):
            provision.drop_database(conn, "precious")
        conn.execute("COMMENT ON DATABASE precious IS 'pgsandbox-lookalike'")
        with pytest.raises(UnsafeOperation):
            provision.drop_database(conn, "precious")
        assert provision.exists(conn, "precious")


def test_a_role_that_may_not_create_databases_gets_told_how_to_fix_it(
    pytester: pytest.Pytester, existing: LocalCluster
) -> None:
    with connect(existing.admin) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE app LOGIN NOCREATEDB PASSWORD {}").format(sql.Literal("s3cret!"))
        )
    url = existing.admin.url().replace("postgres:", "app:", 1).split("@")[1]
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess(f"--pg-url=postgresql://app:s3cret!@{url}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*the role 'app' may not create databases*ALTER ROLE app CREATEDB*unset*"]
    )
    assert "s3cret" not in result.stdout.str()


def test_server_url_with_libpq_variables(
    pytester: pytest.Pytester, existing: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = existing.admin
    monkeypatch.setenv("PGHOST", admin.host)
    monkeypatch.setenv("PGPORT", str(admin.port))
    monkeypatch.setenv("PGUSER", admin.user)
    monkeypatch.setenv("PGPASSWORD", admin.password or "")
    monkeypatch.setenv("PGDATABASE", "postgres")
    pytester.makepyfile("def test_x(pg):\n    assert pg.fetchval('SELECT 1') == 1\n")
    result = pytester.runpytest_subprocess("--pg-server=url")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["postgresql: existing server (libpq PG* variables)"])
    assert _user_dbs(existing) == set()


def test_templates_on_an_existing_server_are_kept_and_reused(
    pytester: pytest.Pytester, existing: LocalCluster
) -> None:
    from pgsb_helpers import pgsandbox

    (pytester.path / "schema.sql").write_text("CREATE TABLE kept (id int);\n")
    pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
    pytester.makepyfile(
        "def test_x(pg):\n    assert pg.fetchval(\"SELECT to_regclass('kept')\") == 'kept'\n"
    )
    url = existing.admin.url()
    first = pytester.runpytest_subprocess(f"--pg-url={url}")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["postgresql: template built: * in *"])
    second = pytester.runpytest_subprocess(f"--pg-url={url}")
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["postgresql: template reused: * (no migrations ran)"])
    gc = pgsandbox(pytester, "gc", "--url", url)
    assert "pgsandbox_tpl_" not in gc.stdout.str()
    with connect(existing.admin) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert [n for n in names if n.startswith("pgsandbox_tpl_")]
    assert not [n for n in names if n.startswith("pgsandbox_session_")]


def test_a_server_on_another_machine_is_refused_before_anything_is_touched(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    url = "postgresql://app:hunter2@db.prod.example.com:5432/postgres"
    result = pytester.runpytest_subprocess(f"--pg-url={url}", "--pg-start-timeout=5")
    assert result.ret == 1  # the session stops before any test
    result.assert_outcomes()
    result.stdout.fnmatch_lines(
        [
            "*refusing to use the PostgreSQL server at "
            "postgresql://app:***@db.prod.example.com:5432/postgres*",
            "*If this server is meant for tests*--pg-allow-hosts=db.prod.example.com*",
        ]
    )
    assert "hunter2" not in result.stdout.str() + result.stderr.str()


def test_a_url_naming_an_application_database_is_refused(
    pytester: pytest.Pytester, existing: LocalCluster
) -> None:
    with connect(existing.admin) as conn:
        conn.execute("CREATE DATABASE shop")
    with connect(existing.admin.for_db("shop")) as conn:
        conn.execute("CREATE TABLE orders (id int); CREATE TABLE customers (id int)")
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess(f"--pg-url={existing.admin.for_db('shop').url()}")
    assert result.ret == 1  # the session stops before any test
    result.assert_outcomes()
    result.stdout.fnmatch_lines(
        [
            "*refusing to use the URL postgresql://postgres:***@127.0.0.1:*/shop: its "
            "database 'shop' holds 2 table(s) that pgsandbox did not create*",
            "*Point the URL at the server's postgres database instead: "
            "postgresql://postgres:***@127.0.0.1:*/postgres*",
        ]
    )
    assert _user_dbs(existing) == {"shop"}  # nothing created beside it
    # An empty database (a CI service's POSTGRES_DB) is fine to connect to.
    with connect(existing.admin) as conn:
        conn.execute("CREATE DATABASE ci_test")
    ok = pytester.runpytest_subprocess(f"--pg-url={existing.admin.for_db('ci_test').url()}")
    ok.assert_outcomes(passed=1)


SECRET_PRINTER = """
import json, os
print(json.dumps({{"engine": "postgres", "host": "{host}", "port": {port},
                  "username": "{user}", "password": os.environ["VAULT_DB_PASSWORD"],
                  "dbname": "postgres"}}))
"""


def test_the_url_can_come_from_a_command(
    pytester: pytest.Pytester, existing: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prints an RDS-format secret, as `aws secretsmanager get-secret-value` would.
    admin = existing.admin
    script = pytester.path / "print_secret.py"
    script.write_text(SECRET_PRINTER.format(host=admin.host, port=admin.port, user=admin.user))
    pytester.makepyfile(
        "def test_x(pg):\n    assert pg.fetchval('SELECT current_user') == 'postgres'\n"
    )
    monkeypatch.setenv("VAULT_DB_PASSWORD", admin.password or "")
    result = pytester.runpytest_subprocess(f"--pg-url-command={sys.executable} {script}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["postgresql: existing server from url_command (*python* ...)"])
    assert admin.password
    assert admin.password not in result.stdout.str()
    assert _user_dbs(existing) == set()


def test_a_failing_url_command_says_what_it_printed_without_secrets(
    pytester: pytest.Pytester,
) -> None:
    script = pytester.path / "vault.py"
    script.write_text(
        "import sys\n"
        "print('token expired; last try used password=hunter2', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess(f"--pg-url-command={sys.executable} {script}")
    assert result.ret == 1  # the session stops before any test
    result.assert_outcomes()
    result.stdout.fnmatch_lines(
        [
            "*url_command '*python*' (url_command from the command line*) failed with exit "
            "code 3. It said:",
            "*token expired; last try used password=****",
            "*Run the command by hand*",
        ]
    )
    assert "hunter2" not in result.stdout.str()
    missing = pytester.runpytest_subprocess("--pg-url-command=no-such-vault-cli read db")
    missing.stdout.fnmatch_lines(["*the program 'no-such-vault-cli' was not found*"])
