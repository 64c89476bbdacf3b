"""``pg_engine``: real connections of its own under reset and clone, the test's one connection
under transaction isolation (as its documentation says)."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = """
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

TABLE = "CREATE TABLE IF NOT EXISTS note (id serial PRIMARY KEY, body text)"


def sessions(pg_engine):
    return Session(pg_engine), Session(pg_engine)


FULL = [pytest.param(i, marks=pytest.mark.pg(isolation=i)) for i in ("reset", "clone")]


@pytest.mark.parametrize("isolation", FULL)
def test_two_sessions_are_two_connections(pg_engine, pg, isolation):
    a, b = sessions(pg_engine)
    pid_a = a.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    pid_b = b.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    assert pid_a != pid_b
    assert pid_a != pg.fetchval("SELECT pg_backend_pid()")
    # On the test's database, not another one.
    assert a.execute(sa.text("SELECT current_database()")).scalar_one() == pg.info.dbname
    a.execute(sa.text("INSERT INTO note (body) VALUES ('draft')"))
    # Not committed: the other session does not see it, and its close() undoes nothing of a.
    assert b.execute(sa.text("SELECT count(*) FROM note")).scalar_one() == 0
    b.close()
    a.commit()
    c = Session(pg_engine)
    assert c.execute(sa.text("SELECT body FROM note")).scalars().all() == ["draft"]
    c.close()
    # A session left open when the test ends is closed by the plugin.
    left = Session(pg_engine)
    left.execute(sa.text("SELECT 1"))


@pytest.mark.parametrize("isolation", FULL)
def test_what_a_test_committed_is_gone(pg_engine, pg, isolation):
    with Session(pg_engine) as s:
        assert s.execute(sa.text("SELECT count(*) FROM note")).scalar_one() == 0
    # No connection of pg_engine's is left from the tests before (only ours and pg's). The
    # sessions the last test's engine closed may still be on their way out for a moment.
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + 2
    while (others := pg.fetchval(query)) and time.monotonic() < deadline:
        pg.conn.rollback()  # a new snapshot of pg_stat_activity
        time.sleep(0.01)
    assert others == 0


def test_under_transaction_isolation_sessions_share_the_test_connection(pg_engine, pg):
    a, b = sessions(pg_engine)
    pid = pg.fetchval("SELECT pg_backend_pid()")
    assert a.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() == pid
    assert b.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() == pid
    a.execute(sa.text("INSERT INTO note (body) VALUES ('draft')"))
    assert b.execute(sa.text("SELECT count(*) FROM note")).scalar_one() == 1
    a.close()
    b.close()
"""


def test_pg_engine_connections(pytester: pytest.Pytester, runtime: Path) -> None:
    pytest.importorskip("sqlalchemy")
    pytester.makepyfile(test_engine=TESTS)
    (pytester.path / "schema.sql").write_text(
        "CREATE TABLE note (id serial PRIMARY KEY, body text);\n"
    )
    pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)
