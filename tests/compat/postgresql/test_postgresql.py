"""pytest-postgresql's test_postgresql.py, behaviour for behaviour."""

from __future__ import annotations

import pytest

TESTS = """
import pytest
from psycopg.pq import ConnStatus

MAKE_Q = "CREATE TABLE test (id serial PRIMARY KEY, num integer, data varchar);"


def test_postgresql_proc(postgresql_proc2):
    assert postgresql_proc2.running() is True


def test_main_postgres(postgresql_load_1):
    cur = postgresql_load_1.cursor()
    cur.execute(MAKE_Q)
    postgresql_load_1.commit()
    cur.close()


def test_two_postgreses(postgresql_load_1, postgresql2):
    for conn in (postgresql_load_1, postgresql2):
        conn.execute(MAKE_Q)  # the same table in each: two databases
        conn.commit()
    assert postgresql_load_1.info.dbname != postgresql2.info.dbname


def test_postgres_load_two_files(postgresql_load_1):
    rows = postgresql_load_1.execute("SELECT * FROM test_load").fetchall()
    assert len(rows) == 2


def test_rand_postgres_port(postgresql2):
    assert postgresql2.info.status == ConnStatus.OK


@pytest.mark.parametrize("_", range(2))
def test_postgres_terminate_connection(postgresql2, _):
    rows = postgresql2.execute(
        "SELECT * FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "AND datname = current_database()"
    ).fetchall()
    assert len(rows) == 1, rows


@pytest.mark.asyncio
async def test_main_postgres_async(postgresql_load_1_async):
    async with postgresql_load_1_async.cursor() as cur:
        await cur.execute(MAKE_Q)
        await postgresql_load_1_async.commit()


@pytest.mark.asyncio
async def test_two_postgreses_async(postgresql_load_1_async, postgresql2_async):
    for conn in (postgresql_load_1_async, postgresql2_async):
        await conn.execute(MAKE_Q)
        await conn.commit()


@pytest.mark.asyncio
async def test_postgres_load_two_files_async(postgresql_load_1_async):
    cur = await postgresql_load_1_async.execute("SELECT * FROM test_load")
    assert len(await cur.fetchall()) == 2


@pytest.mark.asyncio
async def test_rand_postgres_port_async(postgresql2_async):
    assert postgresql2_async.info.status == ConnStatus.OK


@pytest.mark.asyncio
@pytest.mark.parametrize("_", range(2))
async def test_postgres_terminate_connection_async(postgresql2_async, _):
    cur = await postgresql2_async.execute(
        "SELECT * FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "AND datname = current_database()"
    )
    assert len(await cur.fetchall()) == 1
"""


def test_the_upstream_behaviours_hold(ppg: pytest.Pytester) -> None:
    ppg.makepyfile(test_upstream=TESTS)
    result = ppg.runpytest_subprocess()
    result.assert_outcomes(passed=13)


def test_a_commit_does_not_reach_the_next_test(ppg: pytest.Pytester) -> None:
    ppg.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", range(3))
        def test_commits(postgresql_load_1, n):
            rows = postgresql_load_1.execute("SELECT count(*) FROM test_load").fetchone()
            assert rows == (2,)
            postgresql_load_1.execute("INSERT INTO test_load (name) VALUES ('three')")
            postgresql_load_1.commit()
        """
    )
    ppg.runpytest_subprocess().assert_outcomes(passed=3)


def test_the_test_may_open_its_own_connections(ppg: pytest.Pytester) -> None:
    ppg.makepyfile(
        """
        import psycopg

        def test_other_connection(postgresql_load_1):
            postgresql_load_1.execute("INSERT INTO test_load (name) VALUES ('seen')")
            postgresql_load_1.commit()
            with psycopg.connect(**postgresql_load_1.info.get_parameters(),
                                 password=postgresql_load_1.info.password) as other:
                n = other.execute("SELECT count(*) FROM test_load").fetchone()
            assert n == (3,)
        """
    )
    ppg.runpytest_subprocess().assert_outcomes(passed=1)
