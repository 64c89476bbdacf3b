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
