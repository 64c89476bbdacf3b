"""pytest-postgresql's test_postgres_options_plugin.py, behaviour for behaviour: its
``--postgresql-*`` options and ``postgresql_*`` ini keys are honoured (with the default
fixtures of the pytest_postgresql setting, as pytest-postgresql's own tests use them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.urls import connect

SQL = Path(__file__).parent / "sql" / "one_row.sql"
OPT_IN = "[pytest]\nasyncio_default_fixture_loop_scope = function\npg_pytest_postgresql = true\n"

MAX_CONNECTIONS = """
def test_postgres_options(postgresql):
    assert postgresql.execute("SHOW max_connections").fetchone() == ("16",)
"""
LOAD = """
def test_postgres_load_one_file(postgresql):
    assert len(postgresql.execute("SELECT * FROM test").fetchall()) == 1
"""


def test_postgres_options_in_cli(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makeini(OPT_IN)
    pytester.makepyfile(MAX_CONNECTIONS)
    result = pytester.runpytest_subprocess("--postgresql-postgres-options", "-N 16")
    result.assert_outcomes(passed=1)


def test_postgres_options_in_ini(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makeini(OPT_IN + "postgresql_postgres_options = -N 16\n")
    pytester.makepyfile(MAX_CONNECTIONS)
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_postgres_options_of_a_factory(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makepyfile(
        "from pytest_pgsandbox.postgresql import factories\n\n"
        'proc = factories.postgresql_proc(postgres_options="-c max_connections=16")\n'
        'postgresql = factories.postgresql("proc")\n' + MAX_CONNECTIONS
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_unknown_postgres_options_are_a_usage_error(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.makeini(OPT_IN)
    pytester.makepyfile(MAX_CONNECTIONS)
    result = pytester.runpytest_subprocess("--postgresql-postgres-options", "-Z 3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'-Z' is not understood*-c key=value*"])


def test_postgres_loader_in_cli(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makeini(OPT_IN)
    pytester.makepyfile(LOAD)
    pytester.runpytest_subprocess(f"--postgresql-load={SQL}").assert_outcomes(passed=1)


def test_postgres_loader_in_ini(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makeini(OPT_IN + f"postgresql_load = {SQL}\n")
    pytester.makepyfile(LOAD)
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


AUTOCOMMIT = """
from pathlib import Path

def test_vacuumed(postgresql):
    assert postgresql.execute("SELECT count(*) FROM test").fetchone() == (1,)
"""


@pytest.mark.parametrize("where", ["cli", "ini"])
def test_postgres_load_autocommit(pytester: pytest.Pytester, runtime: Path, where: str) -> None:
    """Without autocommit a VACUUM in a loaded file fails; with it, it runs."""
    vacuum = pytester.path / "vacuum.sql"
    vacuum.write_text("VACUUM ANALYZE;\n")
    ini = OPT_IN + f"postgresql_load =\n    {SQL}\n    {vacuum}\n"
    if where == "ini":
        ini += "postgresql_load_autocommit = True\n"
    pytester.makeini(ini)
    pytester.makepyfile(AUTOCOMMIT)
    args = ["--postgresql-load-autocommit"] if where == "cli" else []
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
    pytester.makeini(OPT_IN + f"postgresql_load =\n    {SQL}\n    {vacuum}\n")
    without = pytester.runpytest_subprocess()
    without.assert_outcomes(errors=1)
    without.stdout.fnmatch_lines(["*VACUUM cannot run inside a transaction block*"])


@pytest.mark.parametrize("where", ["cli", "ini"])
def test_postgres_port_search_count_is_accepted(
    pytester: pytest.Pytester, runtime: Path, where: str
) -> None:
    pytester.makeini(OPT_IN + ("postgresql_port_search_count = 10\n" if where == "ini" else ""))
    pytester.makepyfile("def test_it(postgresql):\n    postgresql.execute('SELECT 1')\n")
    args = ["--postgresql-port-search-count", "10"] if where == "cli" else []
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)


NOPROC = """
from pytest_pgsandbox.postgresql import factories

postgresql = factories.postgresql("postgresql_noproc")

def test_maintenance_dbname(postgresql):
    assert postgresql.execute("SELECT 1").fetchone() == (1,)
"""


def _existing_args(existing: LocalCluster) -> list[str]:
    info = existing.admin
    args = [f"--postgresql-host={info.host}", f"--postgresql-port={info.port}"]
    args.append(f"--postgresql-user={info.user}")
    if info.password:
        args.append(f"--postgresql-password={info.password}")
    return args


def test_noproc_uses_the_server_the_options_name(
    pytester: pytest.Pytester, existing: LocalCluster
) -> None:
    with connect(existing.admin) as conn:
        conn.execute("DROP DATABASE IF EXISTS maintenance")
        conn.execute("CREATE DATABASE maintenance")
    pytester.makeini(OPT_IN)
    pytester.makepyfile(NOPROC)
    result = pytester.runpytest_subprocess(
        *_existing_args(existing),
        "--postgresql-maintenance-dbname=maintenance",
        "--postgresql-dbname=maintenance_client",
        "--postgresql-drop-test-database",
    )
    result.assert_outcomes(passed=1)
    assert "***" in result.stdout.str() or existing.admin.password is None
    if existing.admin.password:
        assert existing.admin.password not in result.stdout.str()
    with connect(existing.admin) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
        conn.execute("DROP DATABASE maintenance")
    assert "maintenance" in names
    assert not any(n.startswith("pgsandbox_clone") for n in names), names


def test_a_maintenance_dbname_that_does_not_exist_fails(
    pytester: pytest.Pytester, existing: LocalCluster
) -> None:
    pytester.makeini(OPT_IN)
    pytester.makepyfile(NOPROC)
    result = pytester.runpytest_subprocess(
        *_existing_args(existing), "--postgresql-maintenance-dbname=maintenance_that_does_not_exist"
    )
    assert result.ret == 1  # the session stops before any test, with one message
    result.assert_outcomes()
    result.stdout.fnmatch_lines(['*database "maintenance_that_does_not_exist" does not exist*'])
