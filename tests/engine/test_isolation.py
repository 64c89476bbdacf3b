"""Transaction isolation, with this suite's own ``pg`` fixture on a real server."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors
from psycopg.pq import TransactionStatus

from pytest_pgsandbox import PgDatabase
from pytest_pgsandbox import PgSandboxError
from pytest_pgsandbox._engine.clock.dbclock import SEARCH_PATH


@pytest.fixture
def table(pg: PgDatabase) -> PgDatabase:
    pg.execute("CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL)")
    return pg


def count(pg: PgDatabase) -> int:
    return int(pg.fetchval("SELECT count(*) FROM people"))


def test_commit_keeps_work_inside_the_test(table: PgDatabase) -> None:
    table.execute("INSERT INTO people VALUES (1, 'Alice Chen')")
    table.conn.commit()
    table.conn.commit()  # twice in a row is fine, as with a real connection
    assert count(table) == 1
    assert table.conn.info.transaction_status == TransactionStatus.INTRANS


def test_rollback_undoes_only_what_came_after_the_last_commit(table: PgDatabase) -> None:
    table.execute("INSERT INTO people VALUES (1, 'Alice Chen')")
    table.conn.commit()
    table.execute("INSERT INTO people VALUES (2, 'Bob Okafor')")
    table.conn.rollback()
    assert count(table) == 1


def test_a_failed_statement_then_rollback_recovers(table: PgDatabase) -> None:
    table.execute("INSERT INTO people VALUES (1, 'Alice Chen')")
    table.conn.commit()
    with pytest.raises(errors.UniqueViolation):
        table.execute("INSERT INTO people VALUES (1, 'Alice again')")
    assert table.conn.info.transaction_status == TransactionStatus.INERROR
    table.conn.rollback()
    assert count(table) == 1


def test_commit_after_a_failure_rolls_back_like_postgresql(table: PgDatabase) -> None:
    table.conn.commit()
    table.execute("INSERT INTO people VALUES (1, 'Alice Chen')")
    with pytest.raises(errors.NotNullViolation):
        table.execute("INSERT INTO people VALUES (2, NULL)")
    table.conn.commit()  # PostgreSQL turns COMMIT of a failed transaction into ROLLBACK
    assert count(table) == 0


def test_transaction_blocks_become_savepoints(table: PgDatabase) -> None:
    with table.conn.transaction():
        table.execute("INSERT INTO people VALUES (1, 'Alice Chen')")

    def two_inserts_one_bad() -> None:
        with table.conn.transaction():
            table.execute("INSERT INTO people VALUES (2, 'Bob Okafor')")
            table.execute("INSERT INTO people VALUES (1, 'duplicate')")

    with pytest.raises(errors.UniqueViolation):
        two_inserts_one_bad()
    assert count(table) == 1


def test_commit_inside_a_transaction_block_is_refused_as_by_psycopg(table: PgDatabase) -> None:
    with (
        table.conn.transaction(),
        pytest.raises(psycopg.ProgrammingError, match="forbidden within a Transaction"),
    ):
        table.conn.commit()


def test_autocommit_cannot_be_switched_on_mid_test(pg: PgDatabase) -> None:
    with pytest.raises(psycopg.ProgrammingError):
        pg.conn.autocommit = True


def test_sessions_settings_made_in_a_test_do_not_outlive_it_part1(pg: PgDatabase) -> None:
    pg.execute("SET search_path TO pg_catalog")
    pg.execute("SET TIME ZONE 'Asia/Tokyo'")
    pg.conn.commit()
    pg.execute("SELECT pg_advisory_lock(42)")


def test_sessions_settings_made_in_a_test_do_not_outlive_it_part2(pg: PgDatabase) -> None:
    assert pg.fetchval("SHOW search_path") == SEARCH_PATH  # the database's own
    assert pg.fetchval("SHOW TimeZone") != "Asia/Tokyo"
    held = pg.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
    )
    assert held == 0


def test_other_connections_do_not_see_uncommitted_test_data(table: PgDatabase) -> None:
    table.execute("INSERT INTO people VALUES (1, 'Alice Chen')")
    table.conn.commit()
    with psycopg.connect(table.info.url()) as other:
        assert other.execute("SELECT to_regclass('people')").fetchone() == (None,)
    with pytest.raises(PgSandboxError, match=r"isolation=.reset"):
        table.url  # noqa: B018 - asking for it is the error


def test_closing_the_connection_is_survivable_part1(pg: PgDatabase) -> None:
    pg.execute("CREATE TABLE closed_early (id int)")
    pg.conn.close()


def test_closing_the_connection_is_survivable_part2(pg: PgDatabase) -> None:
    assert pg.fetchval("SELECT to_regclass('closed_early')") is None
