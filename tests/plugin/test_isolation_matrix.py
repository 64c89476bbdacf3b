"""Every isolation strategy against the same matrix of things a test may do to its database.

``examples/isolation_matrix.py`` checks at the start of every test that the database is
exactly the template; here it runs under each strategy, forward, reversed, shuffled and under
xdist, with the isolation verifier on, and afterwards nothing may be left behind.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from psycopg import sql

from pgsb_helpers import leftovers
from pgsb_helpers import matrix_outcomes as outcomes
from pgsb_helpers import matrix_project
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.urls import connect

ORDERS = {
    "forward": "",
    "reversed": "def pytest_collection_modifyitems(items):\n    items.reverse()\n",
    "shuffled": (
        "import random\n\ndef pytest_collection_modifyitems(items):\n"
        "    random.Random(20261122).shuffle(items)\n"
    ),
    "xdist": "",
}


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return matrix_project(pytester)


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("isolation", ["transaction", "reset", "clone"])
def test_the_isolation_matrix(
    project: pytest.Pytester, runtime: Path, isolation: str, order: str
) -> None:
    args = ["isolation_matrix.py", f"--pg-isolation={isolation}", "--pg-verify-isolation"]
    if ORDERS[order]:
        project.makeconftest(ORDERS[order])
    if order == "xdist":
        args += ["-n", "2"]
    project.runpytest_subprocess(*args).assert_outcomes(**outcomes(isolation))
    assert leftovers(runtime) == []


@pytest.mark.parametrize("isolation", ["reset", "clone"])
def test_an_existing_server_holds_only_templates_afterwards(
    project: pytest.Pytester, existing: LocalCluster, isolation: str
) -> None:
    result = project.runpytest_subprocess(
        "isolation_matrix.py",
        f"--pg-url={existing.admin.url()}",
        f"--pg-isolation={isolation}",
        "--pg-clone-pool=3",
    )
    result.assert_outcomes(**outcomes(isolation))
    with connect(existing.admin) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    ours = [n for n in names if n.startswith("pgsandbox_")]
    assert ours
    assert [n for n in ours if not n.startswith("pgsandbox_tpl_")] == []


def no_superuser(server: LocalCluster, createdb: bool = True) -> str:
    """The URL of ``server`` as a new role ``app`` that is no superuser."""
    password = "app-Secret-1"
    with connect(server.admin) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE app LOGIN {} PASSWORD {}").format(
                sql.SQL("CREATEDB" if createdb else "NOCREATEDB"), sql.Literal(password)
            )
        )
    return dataclasses.replace(server.admin, user="app", password=password).url()


@pytest.mark.parametrize("order", list(ORDERS))
def test_reset_without_a_superuser(
    project: pytest.Pytester, existing: LocalCluster, order: str
) -> None:
    """No event triggers and foreign keys kept on: the matrix holds all the same."""
    args = ["isolation_matrix.py", f"--pg-url={no_superuser(existing)}", "--pg-isolation=reset"]
    if ORDERS[order]:
        project.makeconftest(ORDERS[order])
    if order == "xdist":
        args += ["-n", "2"]
    result = project.runpytest_subprocess(*args, "--pg-verify-isolation")
    result.assert_outcomes(**outcomes("reset"))
    assert "app-Secret-1" not in result.stdout.str()
    with connect(existing.admin) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    assert [n for n in names if n.startswith("pgsandbox_") and "_tpl_" not in n] == []


@pytest.mark.parametrize("order", ["forward", "reversed", "shuffled"])
def test_clone_hands_an_unchanged_copy_to_the_next_test(
    project: pytest.Pytester, runtime: Path, order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = project.path / "names.txt"
    monkeypatch.setenv("NAMES_FILE", str(names))
    project.copy_example("clone_reuse.py")
    if ORDERS[order]:
        project.makeconftest(ORDERS[order])
    project.runpytest_subprocess("clone_reuse.py").assert_outcomes(passed=12)
    used = [line.split() for line in names.read_text().splitlines()]
    assert len(used) == 12
    changed = (  # more than rows and sequences: no later test may get that copy
        "test_a_temporary_table",
        "test_truncate_of_an_empty_table",
        "test_a_database_setting",
        "test_another_connection_left_open",
    )
    for i, (test, name) in enumerate(used):
        if test in changed:
            assert name not in [later for _, later in used[i + 1 :]], test
    if order == "forward":  # the 8 tests before the first that changes more make no copy:
        # they share the pool's two and the one made when the first was taken
        assert len({name for _, name in used[:8]}) <= 3
    assert leftovers(runtime) == []
