"""The isolation matrix for each async fixture: every test starts from the template."""

import asyncio
import os

import pytest
import sqlalchemy as sa

# The runner the outer test picks: pytest-asyncio (strict, or auto with no mark), its
# session-wide loop, or anyio.
pytestmark = {
    "asyncio": [pytest.mark.asyncio],
    "asyncio-session-loop": [pytest.mark.asyncio(loop_scope="session")],
    "anyio": [pytest.mark.anyio],
    "auto": [],
}[os.environ.get("PGSB_RUNNER", "asyncio")]

KINDS = ["pg_async_conn", "pg_asyncpg", "pg_async_session"]


class Db:
    """One small interface over the three fixtures, so each test runs on all of them."""

    def __init__(self, kind, value):
        self.kind, self.value = kind, value

    async def run(self, query):
        if self.kind == "pg_async_conn" or self.kind == "pg_asyncpg":
            await self.value.execute(query)
        else:
            await self.value.execute(sa.text(query))

    async def val(self, query):
        if self.kind == "pg_async_conn":
            cur = await self.value.execute(query)
            return (await cur.fetchone())[0]
        if self.kind == "pg_asyncpg":
            return await self.value.fetchval(query)
        return (await self.value.execute(sa.text(query))).scalar()

    async def commit(self):
        if self.kind == "pg_asyncpg":
            return  # autocommit outside transaction(); inside the test's, a savepoint
        await self.value.commit()


@pytest.fixture(params=KINDS)
def db(request):
    return Db(request.param, request.getfixturevalue(request.param))


async def test_insert_and_commit(db):
    await db.run("INSERT INTO users (name) VALUES ('Dmitri Ivanov')")
    await db.commit()
    assert await db.val("SELECT count(*) FROM users") == 4


async def test_update_delete_and_commit(db):
    await db.run("UPDATE users SET name = 'x'")
    await db.run("DELETE FROM orders")
    await db.commit()
    assert await db.val("SELECT count(*) FROM orders") == 0


async def test_truncate(db):
    await db.run("TRUNCATE orders, users")
    await db.commit()
    assert await db.val("SELECT count(*) FROM users") == 0


async def test_ddl(db):
    await db.run("CREATE TABLE extra (id int)")
    await db.run("ALTER TABLE users ADD COLUMN age int")
    await db.run("DROP TABLE orders")
    await db.commit()
    assert await db.val("SELECT to_regclass('orders')") is None


async def test_sequences(db):
    await db.run("SELECT nextval('users_id_seq') FROM generate_series(1, 5)")
    await db.commit()
    assert await db.val("SELECT nextval('orders_id_seq')") == 3


async def test_session_advisory_lock(db):
    await db.run("SELECT pg_advisory_lock(42)")
    await db.commit()


async def test_a_savepoint_block_inside(pg_asyncpg):
    try:
        async with pg_asyncpg.transaction():
            await pg_asyncpg.execute("INSERT INTO users (name) VALUES ('rolled back')")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert await pg_asyncpg.fetchval("SELECT count(*) FROM users") == 3


async def test_two_concurrent_tasks(pg_async_conn):
    async def insert(name):
        await pg_async_conn.execute("INSERT INTO users (name) VALUES (%s)", (name,))
        await pg_async_conn.commit()

    await asyncio.gather(insert("Task One"), insert("Task Two"))
    cur = await pg_async_conn.execute("SELECT count(*) FROM users")
    assert (await cur.fetchone())[0] == 5


@pytest.fixture
def own_connections(pg):
    if pg.isolation == "transaction":
        pytest.skip("a pool opens connections of its own: clone or reset isolation")


async def test_app_pool_commits(own_connections, pg_asyncpg_pool):
    pool = await pg_asyncpg_pool(min_size=2, max_size=2)

    async def insert(name):
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO users (name) VALUES ($1)", name)

    await asyncio.gather(insert("Pool One"), insert("Pool Two"))
    assert await pool.fetchval("SELECT count(*) FROM users") == 5


async def test_sequences_with_a_table_of_its_own(db):
    # nextval() last on a sequence the rollback removes: the earlier moves are put back too.
    await db.run("SELECT nextval('users_id_seq')")
    await db.run("CREATE TABLE extra (id serial, name text)")
    await db.run("INSERT INTO extra (name) VALUES ('Eve Adams')")
    await db.commit()
    assert await db.val("SELECT count(*) FROM extra") == 1


@pytest.mark.parametrize("copy", [1, 2])
async def test_a_prepared_statement_does_not_outlive_the_test(db, copy):
    # PREPARE is not undone by a rollback; a connection kept for the next test must not
    # carry it over (the second copy would find the name taken).
    await db.run("PREPARE pgsb_matrix AS SELECT count(*) FROM users")
    assert await db.val("EXECUTE pgsb_matrix") == 3


BACKENDS = {}  # this process's: under xdist each worker keeps its own connection


@pytest.mark.parametrize("copy", [1, 2])
async def test_the_connection_is_kept_from_test_to_test(pg, pg_async_conn, copy):
    cur = await pg_async_conn.execute("SELECT pg_backend_pid()")
    BACKENDS.setdefault(os.getpid(), set()).add((await cur.fetchone())[0])
    if pg.isolation == "transaction":  # on a new event loop or not, the same backend
        assert len(BACKENDS[os.getpid()]) == 1


async def test_sequences_restarted_by_truncate(db):
    # RESTART IDENTITY gives the sequence a new file, which the rollback throws away: the
    # old one, moved by the first insert, is put back all the same.
    await db.run("INSERT INTO users (name) VALUES ('Frank Moreau')")
    await db.run("TRUNCATE orders, users RESTART IDENTITY")
    await db.run("INSERT INTO users (name) VALUES ('Grace Lee')")
    await db.commit()
    assert await db.val("SELECT max(id) FROM users") == 1
