"""Data scenarios in pytest sessions, and the ``pgsandbox scenario`` command, run for real.

The scenarios are exported once from a development database, then used by inner test sessions;
the command's test exports its own from a server of its own.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgsb_helpers import leftovers
from pgsb_helpers import pgsandbox
from pytest_pgsandbox import PgServer
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.templates import scenario
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect

SCHEMA = """
CREATE TABLE users (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    plan text NOT NULL DEFAULT 'free'
);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    user_id int NOT NULL REFERENCES users,
    total numeric(10, 2) NOT NULL
);
INSERT INTO users (name) VALUES ('Seeded by the schema');
"""

BILLING = """
INSERT INTO users (name, plan) VALUES ('Alice Chen', 'pro'), ('Bob Okafor', 'free'),
  ('Carmen Ruiz', 'pro');
INSERT INTO orders (user_id, total) VALUES (1, 10), (1, 20.5), (3, 7.25);
"""

# Every test checks that it starts from exactly the scenario's rows and sequence values,
# then writes (and commits) so that a leak would show in the next test.
TESTS = """
import pytest

pytestmark = pytest.mark.pg(scenario="billing/pro")


def state(pg):
    return (
        pg.fetchall("SELECT id, name, plan FROM users ORDER BY id"),
        pg.fetchall("SELECT user_id, total::text FROM orders ORDER BY id"),
        pg.fetchall("SELECT last_value, is_called FROM users_id_seq"),
    )


PRO = (
    [(1, "Alice Chen", "pro"), (2, "Bob Okafor", "free"), (3, "Carmen Ruiz", "pro")],
    [(1, "10.00"), (1, "20.50"), (3, "7.25")],
    [(3, True)],
)


@pytest.mark.parametrize("n", range(4))
def test_starts_from_the_scenario(pg, n):
    assert state(pg) == PRO
    new = pg.fetchval("INSERT INTO users (name) VALUES ('Dana') RETURNING id")
    assert new == 4
    pg.execute("INSERT INTO orders (user_id, total) VALUES (%s, 1)", (new,))
    pg.execute("DELETE FROM orders WHERE user_id = 3")
    pg.conn.commit()


@pytest.mark.pg(scenario="billing/pro/refund")
def test_an_extending_scenario(pg):
    assert pg.fetchall("SELECT user_id, total::text FROM orders ORDER BY id") == [
        (1, "10.00"), (1, "20.50"), (3, "7.25"), (3, "-7.25")
    ]
    assert state(pg)[0] == PRO[0]
    pg.execute("TRUNCATE orders")
    pg.conn.commit()


class TestUnderAClassMarker:
    pytestmark = pytest.mark.pg(isolation="clone")

    def test_module_scenario_with_class_isolation(self, pg):
        assert pg.isolation == "clone"
        assert state(pg) == PRO


@pytest.mark.pg(scenario="empty")
def test_an_empty_scenario_empties_its_tables(pg):
    assert pg.fetchval("SELECT count(*) FROM users") == 0
    assert pg.fetchval("SELECT count(*) FROM orders") == 0
"""

PLAIN = """
def test_without_a_scenario_the_template_is_as_built(pg):
    assert pg.fetchall("SELECT id, name FROM users") == [(1, "Seeded by the schema")]
    assert pg.fetchval("SELECT count(*) FROM orders") == 0
"""


def make_dev_database(admin: ConnInfo, name: str) -> ConnInfo:
    """A development database with the schema and the billing rows."""
    with connect(admin) as conn:
        provision.drop_database(conn, name)
        provision.create_database(conn, name, {"kind": "test"})
    with connect(admin.for_db(name)) as conn:
        conn.execute(SCHEMA.encode())
        conn.execute("TRUNCATE users, orders RESTART IDENTITY")
        conn.execute(BILLING.encode())
    return admin.for_db(name)


@pytest.fixture(scope="session")
def scenarios(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """billing/pro, billing/pro/refund (extends it) and empty, exported once per session."""
    folder = tmp_path_factory.mktemp("scenarios")
    # One per xdist worker: the workers share the run's server.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    dev = make_dev_database(pg_server.admin, f"pgsb_scenarios_dev_{worker}")
    with connect(dev, autocommit=False) as conn:
        scenario.export(conn, folder, "billing/pro")
        conn.execute("INSERT INTO orders (user_id, total) VALUES (3, -7.25)")
        conn.commit()
        scenario.export(conn, folder, "billing/pro/refund", extends="billing/pro")
        conn.execute("TRUNCATE users, orders")
        conn.commit()
        scenario.export(conn, folder, "empty")
    yield folder
    with connect(pg_server.admin) as conn:
        provision.drop_database(conn, dev.dbname)


@pytest.fixture
def project(pytester: pytest.Pytester, scenarios: Path) -> pytest.Pytester:
    (pytester.path / "schema.sql").write_text(SCHEMA)
    pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
    shutil.copytree(scenarios, pytester.path / ".pgsandbox/scenarios")
    pytester.makepyfile(test_scenarios=TESTS, test_plain=PLAIN)
    return pytester


ORDERS = {
    "reversed": "def pytest_collection_modifyitems(items):\n    items.reverse()\n",
    "shuffled": (
        "import random\n\ndef pytest_collection_modifyitems(items):\n"
        "    random.Random(20261123).shuffle(items)\n"
    ),
    "xdist": "",
}


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("isolation", ["transaction", "reset", "clone"])
def test_a_marked_test_sees_exactly_the_scenario(
    project: pytest.Pytester, runtime: Path, isolation: str, order: str
) -> None:
    args = [f"--pg-isolation={isolation}", "--pg-verify-isolation"]
    if ORDERS[order]:
        project.makeconftest(ORDERS[order])
    if order == "xdist":
        args += ["-n", "2"]
    result = project.runpytest_subprocess(*args)
    result.assert_outcomes(passed=8)
    assert leftovers(runtime) == []


def test_scenario_templates_are_loaded_once_and_reused(
    project: pytest.Pytester, runtime: Path
) -> None:
    first = project.runpytest_subprocess("-v")
    first.assert_outcomes(passed=8)
    first.stdout.fnmatch_lines(["postgresql: scenario billing/pro: template *"])
    again = project.runpytest_subprocess("-v")
    again.assert_outcomes(passed=8)
    again.stdout.fnmatch_lines(
        [
            "postgresql: template reused: *",
            "postgresql: scenario billing/pro: template reused",
            "postgresql: scenario billing/pro/refund: template reused",
        ]
    )
    # A changed scenario file gives another template: never a stale one. (A name of this
    # run's own: the cluster cache may hold a template of any content an earlier run had.)
    csv = project.path / ".pgsandbox/scenarios/billing/pro/data/public.users.csv"
    csv.write_text(csv.read_text().replace("Bob Okafor", f"Robert {secrets.token_hex(4)}"))
    changed = project.runpytest_subprocess("-v", "test_scenarios.py::test_starts_from_the_scenario")
    changed.stdout.fnmatch_lines(["postgresql: scenario billing/pro: template loaded in *"])
    changed.assert_outcomes(failed=4)


def test_a_scenario_that_no_longer_fits_fails_the_session_once(project: pytest.Pytester) -> None:
    schema = project.path / "schema.sql"
    schema.write_text(
        SCHEMA.replace("plan text NOT NULL DEFAULT 'free'", "tier text NOT NULL")
        .replace("INSERT INTO users (name)", "INSERT INTO users (name, tier)")
        .replace("VALUES ('Seeded by the schema')", "VALUES ('Seeded by the schema', 'x')")
    )
    result = project.runpytest_subprocess()
    assert result.ret == 1
    output = result.stdout.str() + result.stderr.str()
    assert output.count("does not fit the schema") == 1, output
    for expected in (
        "scenario 'billing/pro' (",
        "table public.users: column plan (text) is gone (dropped or renamed?)",
        "table public.users: new column tier (text) is NOT NULL without a default",
        "pgsandbox scenario export billing/pro --url URL",
    ):
        assert expected in output
    assert " passed" not in output
    assert " failed" not in output
    check = pgsandbox(project, "scenario", "check")
    assert check.ret == 1
    check.stdout.fnmatch_lines(
        [
            "schema template: *",
            "  FAILED  billing/pro: scenario 'billing/pro' (*) does not fit the schema of *",
            "*column plan (text) is gone*",
            "*0 of 3 scenarios fit the schema",
        ]
    )


def test_unknown_scenario_and_bad_marker(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_bad="""
import pytest

@pytest.mark.pg(scenario=3)
def test_not_a_name(pg):
    pass
"""
    )
    result = project.runpytest_subprocess("test_bad.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.pg(scenario=3)*give the scenario's name*"])
    project.makepyfile(
        test_bad="""
import pytest

@pytest.mark.pg(scenario="billing/basic")
def test_missing(pg):
    pass
"""
    )
    result = project.runpytest_subprocess("test_bad.py")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*no scenario 'billing/basic' in *Scenarios there: billing/pro, billing/pro/refund,"
            " empty*"
        ]
    )


def test_seed_from_a_scenario(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\npg_schema = sql:schema.sql\npg_seed = scenario:billing/pro/refund\n")
    project.makepyfile(
        test_seeded="""
def test_the_template_holds_the_scenario(pg):
    assert pg.fetchval("SELECT count(*) FROM users") == 3
    assert pg.fetchval("SELECT sum(total)::text FROM orders") == "30.50"
"""
    )
    project.runpytest_subprocess("test_seeded.py").assert_outcomes(passed=1)


def test_the_scenario_command(project: pytest.Pytester, existing: LocalCluster) -> None:
    dev = make_dev_database(existing.admin, "dev").url()
    exported = pgsandbox(project, "scenario", "export", "billing/pro", "--url", dev)
    assert exported.ret == 0, exported.stderr.str()
    exported.stdout.fnmatch_lines(
        ["exported scenario billing/pro from database 'dev' on *: 2 tables, 6 rows, 2 sequences*"]
    )
    assert ":***@" in exported.stdout.str()
    assert existing.admin.password not in exported.stdout.str()
    with connect(existing.admin.for_db("dev")) as conn:
        conn.execute("INSERT INTO orders (user_id, total) VALUES (3, -7.25)")
    child = pgsandbox(
        project,
        "scenario",
        "export",
        "billing/pro/refund",
        "--url",
        dev,
        "--extends",
        "billing/pro",
    )
    assert child.ret == 0, child.stderr.str()
    child.stdout.fnmatch_lines(["*: 1 tables, 4 rows, 2 sequences*", "  extends billing/pro: *"])
    with connect(existing.admin.for_db("dev")) as conn:
        conn.execute("DELETE FROM orders WHERE total < 0")
        conn.execute("SELECT setval('orders_id_seq', 3)")
    listed = pgsandbox(project, "scenario", "list")
    listed.stdout.fnmatch_lines(
        [
            "scenarios in */.pgsandbox/scenarios:",
            "  billing/pro: 2 tables, 6 rows",
            "  billing/pro/refund: 2 tables, 7 rows, extends billing/pro",
            "  empty: 2 tables, 0 rows",
        ]
    )
    manifest = json.loads(
        (project.path / ".pgsandbox/scenarios/billing/pro/refund/manifest.json").read_text()
    )
    assert [t["name"] for t in manifest["tables"]] == ["orders"]  # users as in billing/pro
    check = pgsandbox(project, "scenario", "check")
    assert check.ret == 0, check.stdout.str() + check.stderr.str()
    check.stdout.fnmatch_lines(["  ok      billing/pro", "3 of 3 scenarios fit the schema"])
    same = pgsandbox(project, "scenario", "diff", "billing/pro", "--url", dev)
    assert same.ret == 0, same.stdout.str() + same.stderr.str()
    same.stdout.fnmatch_lines(["database 'dev' on * holds exactly scenario billing/pro"])
    with connect(existing.admin.for_db("dev")) as conn:
        conn.execute("UPDATE users SET plan = 'team' WHERE id = 2")
    changed = pgsandbox(project, "scenario", "diff", "billing/pro", "--url", dev)
    assert changed.ret == 1
    changed.stdout.fnmatch_lines(
        [
            "database 'dev' on * differs from scenario billing/pro:",
            "  table public.users: 1 rows only in the scenario, 1 only in the database",
            "    - 2,Bob Okafor,free",
            "    + 2,Bob Okafor,team",
        ]
    )
    refused = pgsandbox(project, "scenario", "load", "billing/pro", "--url", dev)
    assert refused.ret == 1
    assert "would delete the rows of: public.users (3 rows), public.orders (3 rows)" in (
        refused.stderr.str()
    )
    loaded = pgsandbox(project, "scenario", "load", "billing/pro/refund", "--url", dev, "--replace")
    assert loaded.ret == 0, loaded.stderr.str()
    loaded.stdout.fnmatch_lines(["loaded scenario billing/pro/refund into *: 2 tables, 7 rows*"])
    back = pgsandbox(project, "scenario", "diff", "billing/pro/refund", "--url", dev)
    assert back.ret == 0, back.stdout.str()
    needs_url = pgsandbox(project, "scenario", "export", "x")
    assert needs_url.ret == 1
    assert "needs a database: give --url URL" in needs_url.stderr.str()
