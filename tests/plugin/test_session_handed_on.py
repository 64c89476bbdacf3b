"""A test's session state does not reach the next test, whichever isolation keeps the
connection (transaction and reset always, clone when the copy is handed on)."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = """
import psycopg
import pytest

pytestmark = pytest.mark.pg(isolation=ISOLATION)


@pytest.mark.parametrize("n", range(3))
def test_leaves_its_session_changed(pg, n):
    assert pg.fetchval("SELECT count(*) FROM pg_prepared_statements WHERE from_sql") == 0
    mine = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    assert pg.fetchval(mine) == 0
    assert pg.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
    assert pg.fetchval("SHOW work_mem") != "1MB"
    pg.execute("PREPARE shop_query AS SELECT count(*) FROM items")  # the same name each time
    pg.execute("SELECT pg_advisory_lock(7)")
    pg.execute("SET work_mem = '1MB'")
    pg.execute("LISTEN orders")
    pg.execute("INSERT INTO items VALUES (1)")
    pg.conn.commit()
    assert pg.fetchval("EXECUTE shop_query") == 1
"""


@pytest.mark.parametrize("isolation", ["transaction", "reset", "clone"])
def test_the_next_test_gets_a_clean_session(
    pytester: pytest.Pytester, runtime: Path, isolation: str
) -> None:
    (pytester.path / "schema.sql").write_text("CREATE TABLE items (id int);\n")
    pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
    pytester.makepyfile(TESTS.replace("ISOLATION", repr(isolation)))
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=3)
