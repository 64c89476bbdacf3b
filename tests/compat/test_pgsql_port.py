"""pytest-pgsql's own suite, behaviour for behaviour, as a project would run it.

``examples/pgsql_port`` holds our tests of what pytest-pgsql's suite checks (both fixtures in
one test, SQLAlchemy's exceptions, snapshots, DatabaseIsDirtyError, frozen time, messages),
run with that suite's options, in order, reversed, shuffled and under xdist: the outcome must
not depend on the order. ``bench/pgsql_upstream.py`` runs the upstream suite itself.
"""

from __future__ import annotations

import importlib.util

import pytest

TESTS = 26
OPTIONS = ("--pg-conf-opt=track_commit_timestamp=True", "--pg-extensions=btree_gin,,btree_gist,")


@pytest.fixture
def project(pytester: pytest.Pytester, runtime: object) -> pytest.Pytester:
    pytester.copy_example("pgsql_port")
    return pytester


def _order_options() -> list[tuple[str, ...]]:
    orders = [("-p", "no:randomly")]
    if importlib.util.find_spec("pytest_reverse"):
        orders.append(("-p", "no:randomly", "--reverse"))
    if importlib.util.find_spec("pytest_randomly"):
        orders.append(("-p", "randomly"))
    orders.append(("-p", "no:randomly", "-n", "2"))
    return orders


@pytest.mark.parametrize("order", _order_options(), ids=" ".join)
def test_the_port_passes_in_any_order(project: pytest.Pytester, order: tuple[str, ...]) -> None:
    result = project.runpytest_subprocess(*OPTIONS, *order)
    result.assert_outcomes(passed=TESTS)


PSYCOPG2_TEST = """
import io

import pytest
import sqlalchemy as sqla
import sqlalchemy.exc as sa_exc


def test_helpers_share_the_psycopg2_connection(transacted_postgresql_db):
    db = transacted_postgresql_db
    assert db.connection.dialect.driver == "psycopg2"
    db.create_schema("made_by_helper")
    query = "SELECT count(*) FROM pg_namespace WHERE nspname = 'made_by_helper'"
    assert db.connection.execute(sqla.text(query)).scalar() == 1
    db.connection.execute(sqla.text("CREATE TABLE made_by_helper.t (id int PRIMARY KEY)"))
    assert db.has_table("made_by_helper.t")
    assert db.load_csv(io.StringIO("id\\n1\\n2\\n"), "made_by_helper.t") == 2
    count = db.connection.execute(sqla.text("SELECT count(*) FROM made_by_helper.t"))
    assert count.scalar() == 2
    with pytest.raises(sa_exc.IntegrityError):
        db.load_csv(io.StringIO("id\\n1\\n"), "made_by_helper.t")
    db.rollback()
    assert not db.has_schema("made_by_helper")
    assert db.run_sql_file(io.StringIO("SELECT '100%'")).scalar() == "100%"
    with db.time.freeze("2017-01-01"):
        assert str(db.run_sql_file(io.StringIO("SELECT CURRENT_DATE")).scalar()) == "2017-01-01"
"""


def test_the_port_passes_on_psycopg2(project: pytest.Pytester) -> None:
    pytest.importorskip("psycopg2")
    project.makepyfile(test_psycopg2=PSYCOPG2_TEST)
    result = project.runpytest_subprocess(*OPTIONS, "-p", "no:randomly", "--pg-driver=psycopg2")
    result.assert_outcomes(passed=TESTS + 1)


def test_fixtures_that_cannot_share_a_database_are_named(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_clone="""
        import pytest

        @pytest.mark.pg(isolation="clone")
        def test_both(pg, transacted_postgresql_db):
            pass
        """
    )
    result = project.runpytest_subprocess("test_clone.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*asks for pg (clone isolation) and transacted_postgresql_db (transaction isolation)*"]
    )
    assert "pg and postgresql_db" not in result.stdout.str()
