"""The tests of pytest-postgresql's README, unchanged but for the import line."""

import os

import psycopg
import pytest

from pytest_pgsandbox.postgresql.janitor import AsyncDatabaseJanitor
from pytest_pgsandbox.postgresql.janitor import DatabaseJanitor


def test_example(postgresql):
    """Check main postgresql fixture."""
    with postgresql.cursor() as cur:
        cur.execute("CREATE TABLE test (id serial PRIMARY KEY, num integer, data varchar);")
        postgresql.commit()


@pytest.mark.asyncio
async def test_example_async(postgresql_async):
    """Check main async postgresql fixture."""
    async with postgresql_async.cursor() as cur:
        await cur.execute("CREATE TABLE test (id serial PRIMARY KEY, num integer, data varchar);")
        await postgresql_async.commit()


def test_stories(postgresql):
    with postgresql.cursor() as cur:
        cur.execute("SELECT count(*) FROM stories")
        assert cur.fetchone()[0] == 2


def test_stories_again_after_a_commit(postgresql):
    with postgresql.cursor() as cur:
        cur.execute("DELETE FROM stories")
        postgresql.commit()
        cur.execute("SELECT count(*) FROM stories")
        assert cur.fetchone()[0] == 0


def test_customized(postgresql_my):
    assert postgresql_my.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.asyncio
async def test_customized_async(postgresql_my_async):
    cur = await postgresql_my_async.execute("SELECT 1")
    assert await cur.fetchone() == (1,)


def test_prepopulated(postgresql_loaded):
    rows = postgresql_loaded.execute("SELECT name FROM customers ORDER BY id").fetchall()
    assert rows == [("from a file",), ("from a callable",), ("from a callable",)]


def test_load_autocommit(postgresql_autocommit):
    row = postgresql_autocommit.execute("SELECT count(*) FROM customers").fetchone()
    assert row == (1,)


def test_docker(postgresql_docker):
    with postgresql_docker.cursor() as cur:
        cur.execute("SELECT 1")


def test_chaining(client):
    rows = client.execute("SELECT name FROM schema_table ORDER BY id").fetchall()
    assert rows == [("data_layer",), ("more_data_layer",)]


def test_manual_janitor(postgresql_proc):
    with DatabaseJanitor(
        user=postgresql_proc.user,
        host=postgresql_proc.host,
        port=postgresql_proc.port,
        dbname="my_custom_db",
        version=postgresql_proc.version,
        password="secret_password",
    ):
        with psycopg.connect(
            dbname="my_custom_db",
            user=postgresql_proc.user,
            host=postgresql_proc.host,
            port=postgresql_proc.port,
            password="secret_password",
        ) as conn:
            conn.execute("SELECT 1")


# Named apart from the sync example's: xdist workers share one server here.
@pytest.mark.asyncio
async def test_manual_async_janitor(postgresql_proc):
    async with AsyncDatabaseJanitor(
        user=postgresql_proc.user,
        host=postgresql_proc.host,
        port=postgresql_proc.port,
        dbname="my_custom_async_db",
        version=postgresql_proc.version,
        password="secret_password",
    ):
        async with await psycopg.AsyncConnection.connect(
            dbname="my_custom_async_db",
            user=postgresql_proc.user,
            host=postgresql_proc.host,
            port=postgresql_proc.port,
            password="secret_password",
        ) as conn:
            # use async connection
            await conn.execute("SELECT 1")


def test_proc_attributes(postgresql_proc):
    assert postgresql_proc.running() is True
    # the tests' databases are named so; xdist workers share the server: "testsgw0", ...
    assert postgresql_proc.dbname == "tests" + os.environ.get("PYTEST_XDIST_WORKER", "")
    assert postgresql_proc.version.major >= 13
    with psycopg.connect(
        host=postgresql_proc.host,
        port=postgresql_proc.port,
        user=postgresql_proc.user,
        password=postgresql_proc.password,
        dbname=postgresql_proc.template_dbname,
    ) as conn:
        assert conn.execute("SELECT count(*) FROM stories").fetchone() == (2,)
