"""Choosing the isolation: the setting, the marker, their precedence, and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest


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
            with psycopg.connect(pg.info.url()) as other:
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
            "transaction, clone, reset.",
            "*@pytest.mark.pg got isolaton, which it does not take; it takes keyword "
            "arguments: isolation, scenario.",
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
