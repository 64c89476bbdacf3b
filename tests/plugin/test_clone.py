"""Clone isolation: a database per test, copied from the template ahead of time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pgsb_helpers import leftovers
from pytest_pgsandbox._engine.cluster import LocalCluster
from pytest_pgsandbox._engine.server import local_cluster
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.settings import Settings

SCHEMA = (
    "CREATE TABLE people (id serial PRIMARY KEY, name text NOT NULL);\n"
    "CREATE TABLE pets (id serial PRIMARY KEY);\n"
    "INSERT INTO people (name) VALUES ('Alice Chen');\n"
)
REVERSE = "def pytest_collection_modifyitems(items):\n    items.reverse()\n"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "schema.sql").write_text(SCHEMA)
    pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
    pytester.copy_example("clone_isolation.py")
    return pytester


@pytest.mark.parametrize("how", ["forward", "reversed", "xdist"])
def test_the_isolation_matrix(project: pytest.Pytester, runtime: Path, how: str) -> None:
    args = ["clone_isolation.py", "-p", "no:randomly"]
    if how == "reversed":
        project.makeconftest(REVERSE)
    if how == "xdist":
        args += ["-n", "2"]
    project.runpytest_subprocess(*args).assert_outcomes(passed=6)
    assert leftovers(runtime) == []


@pytest.fixture
def existing(settings: Settings) -> Iterator[LocalCluster]:
    server = local_cluster(settings.with_values(bin_dir=Path("embedded")))
    server.start()
    yield server
    server.stop()


def test_no_copy_is_left_on_an_existing_server(
    project: pytest.Pytester, existing: LocalCluster
) -> None:
    result = project.runpytest_subprocess(
        "clone_isolation.py", f"--pg-url={existing.admin.url()}", "--pg-clone-pool=3"
    )
    result.assert_outcomes(passed=6)
    with connect(existing.admin) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    assert [n for n in names if n.startswith("pgsandbox_clone_")] == []
    assert [n for n in names if n.startswith("pgsandbox_tpl_")]


def test_the_setting_the_marker_and_their_precedence(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.makeini("[pytest]\npg_isolation = clone\n")
    pytester.makepyfile(
        """
        import psycopg
        import pytest

        def visible_elsewhere(pg):
            pg.execute("CREATE TABLE t (id int)")
            pg.conn.commit()
            with psycopg.connect(pg.url) as other:
                return other.execute("SELECT to_regclass('t')").fetchone()[0] is not None

        def test_setting(pg):
            assert visible_elsewhere(pg)  # committed for real, in its own copy

        @pytest.mark.pg(isolation="transaction")
        def test_marker_wins(pg):
            assert not visible_elsewhere(pg)  # a savepoint: no one else sees it

        @pytest.mark.pg(isolation="clone")
        class TestClass:
            def test_in_class(self, pg):
                assert pg.dbname.startswith("pgsandbox_clone_")
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=3)


def test_bad_marker_arguments_are_named(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.pg(isolation="nested")
        def test_bad_value(pg):
            pass

        @pytest.mark.pg(isolaton="clone")
        def test_typo(pg):
            pass
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.pg(isolation='nested') on *test_bad_value: accepted values are "
            "transaction, clone.",
            "*@pytest.mark.pg got isolaton, which it does not take; it takes keyword "
            "arguments: isolation.",
        ]
    )


def test_url_env_holds_the_copy(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    pytester.makeini("[pytest]\npg_url_env = DATABASE_URL\npg_isolation = clone\n")
    pytester.makepyfile(
        """
        import os

        def test_env(pg):
            assert os.environ["DATABASE_URL"] == pg.url
            assert "pgsandbox_clone_" in pg.url
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
