"""Async fixtures: the isolation matrix under pytest-asyncio (strict, auto, a session-wide
loop) and anyio (asyncio; trio skips: no driver supports it), in any order and under xdist;
the FastAPI example; messages when a driver or a runner is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SCHEMA = """
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES users);
INSERT INTO users (name) VALUES ('Alice Chen'), ('Bob Okafor'), ('Carmen Ruiz');
INSERT INTO orders (user_id) VALUES (1), (2);
"""
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# 8 tests x 3 fixtures, 2 copies x 3 fixtures, a savepoint block, two tasks, the app's
# pool, 2 copies of the kept connection
TESTS = 8 * 3 + 2 * 3 + 3 + 2
POOL_SKIPPED = 1  # the pool needs clone or reset isolation


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "schema.sql").write_text(SCHEMA)
    pytester.makeini(
        "[pytest]\npg_schema = sql:schema.sql\nasyncio_default_fixture_loop_scope = function\n"
        "asyncio_default_test_loop_scope = function\n"
    )
    pytester.copy_example("async_matrix")
    return pytester


def expected(isolation: str, trio: bool = False) -> dict[str, int]:
    skipped = POOL_SKIPPED if isolation == "transaction" else 0
    outcome = {"passed": TESTS - skipped, "skipped": skipped}
    if trio:  # every test runs a second time on trio, where the async drivers skip
        outcome["skipped"] += TESTS
    return outcome


@pytest.mark.parametrize("isolation", ["transaction", "clone", "reset"])
@pytest.mark.parametrize(
    ("runner", "args"),
    [
        ("asyncio", ()),
        ("auto", ("-o", "asyncio_mode=auto")),
        ("asyncio-session-loop", ()),
        ("anyio", ()),  # with pytest-asyncio installed too, in strict mode
    ],
)
def test_the_async_matrix(
    project: pytest.Pytester,
    runtime: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolation: str,
    runner: str,
    args: tuple[str, ...],
) -> None:
    monkeypatch.setenv("PGSB_RUNNER", runner)
    monkeypatch.setenv("PGSB_ORDER", "shuffled")
    result = project.runpytest_subprocess(
        f"--pg-isolation={isolation}", "--pg-verify-isolation", "-W", "error", *args
    )
    result.assert_outcomes(**expected(isolation, trio=runner == "anyio"))


@pytest.mark.parametrize("isolation", ["transaction", "reset"])
def test_reversed_and_under_xdist(
    project: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch, isolation: str
) -> None:
    monkeypatch.setenv("PGSB_RUNNER", "asyncio")
    monkeypatch.setenv("PGSB_ORDER", "reversed")
    result = project.runpytest_subprocess(
        f"--pg-isolation={isolation}", "--pg-verify-isolation", "-n", "2", "-W", "error"
    )
    result.assert_outcomes(**expected(isolation))


def test_the_fastapi_example(pytester: pytest.Pytester, runtime: Path) -> None:
    shutil.copytree(EXAMPLES / "fastapi_app", pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest_subprocess("--pg-verify-isolation")
    result.assert_outcomes(passed=5)


def test_a_sync_test_is_told_what_to_do(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makepyfile("def test_sync(pg_async_conn):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pg_async_conn needs an async test*@pytest.mark.asyncio*"])


def test_pg_conn_begins_only_when_a_test_uses_it(pytester: pytest.Pytester, runtime: Path) -> None:
    """An async test's own connection is all it needs: pg's psycopg connection starts no
    transaction until the test touches pg.conn (then it isolates as always)."""
    pytester.makepyfile(
        """
        import pytest

        OPEN = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgsandbox test' "
            "AND state LIKE 'idle in transaction%'"
        )

        @pytest.mark.asyncio
        async def test_async_only(pg, pg_async_conn):
            await pg_async_conn.execute("CREATE TABLE a (id int)")
            cur = await pg_async_conn.execute(OPEN)
            assert await cur.fetchone() == (0,)

        @pytest.mark.asyncio
        async def test_both(pg, pg_async_conn):
            pg.execute("CREATE TABLE b (id int)")
            cur = await pg_async_conn.execute(OPEN)
            assert await cur.fetchone() == (1,)

        def test_nothing_left(pg):
            assert pg.fetchval("SELECT to_regclass('a') IS NULL AND to_regclass('b') IS NULL")
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-o", "asyncio_default_fixture_loop_scope=function"
    )
    result.assert_outcomes(passed=3)


KEPT_ASYNCPG = """
import pytest

seen = {{}}


async def state(conn):
    return {{
        "locks": await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
        "table": await conn.fetchval("SELECT to_regclass('t')::text"),
    }}


@pytest.mark.asyncio(loop_scope="{scope}")
async def test_one(pg_asyncpg):
    seen["pid"] = pg_asyncpg.get_server_pid()
    await pg_asyncpg.execute("CREATE TABLE t (a int); INSERT INTO t VALUES (1)")
    assert await pg_asyncpg.fetch("SELECT * FROM t") == [(1,)]
    await pg_asyncpg.execute("SELECT pg_advisory_lock(7)")
    await pg_asyncpg.add_listener("news", lambda *args: None)
    seen["statements"] = {{
        r[0] for r in await pg_asyncpg.fetch("SELECT name FROM pg_prepared_statements")
    }}
    assert seen["statements"]


@pytest.mark.asyncio(loop_scope="{scope}")
async def test_two(pg_asyncpg):
    # The same session, as a new one would be: the same query on a table of another shape.
    assert pg_asyncpg.get_server_pid() {same} seen["pid"]
    assert await state(pg_asyncpg) == {{"locks": 0, "table": None}}
    names = {{r[0] for r in await pg_asyncpg.fetch("SELECT name FROM pg_prepared_statements")}}
    assert not names & seen["statements"]
    assert await pg_asyncpg.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
    await pg_asyncpg.execute("CREATE TABLE t (a text, b int); INSERT INTO t VALUES ('x', 2)")
    assert await pg_asyncpg.fetch("SELECT * FROM t") == [("x", 2)]
    async with pg_asyncpg.transaction():  # a savepoint inside the test's transaction
        await pg_asyncpg.execute("INSERT INTO t VALUES ('y', 3)")
    assert await pg_asyncpg.fetchval("SELECT count(*) FROM t") == 2


@pytest.mark.asyncio(loop_scope="{scope}")
async def test_three(pg_asyncpg, pg):
    assert await pg_asyncpg.fetchval("SELECT to_regclass('t')") is None
    assert pg.fetchval("SELECT to_regclass('t')") is None
"""


@pytest.mark.parametrize(("scope", "same"), [("module", "=="), ("function", "!=")])
def test_asyncpg_connection_is_handed_on_within_its_event_loop(
    pytester: pytest.Pytester, runtime: Path, scope: str, same: str
) -> None:
    """On a loop wider than a test the next test takes the connection over, clean; with a
    loop per test each test has a new backend. Either way nothing is left open (-W error)."""
    pytester.makepyfile(KEPT_ASYNCPG.format(scope=scope, same=same))
    result = pytester.runpytest_subprocess(
        "-p",
        "no:randomly",
        "--pg-verify-isolation",
        "-W",
        "error",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=3)


def test_pool_under_transaction_isolation_says_what_to_do(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_pool(pg_asyncpg_pool):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-o", "asyncio_default_fixture_loop_scope=function")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pg.url under transaction isolation*"])


@pytest.mark.parametrize(
    ("fixture", "module", "extra"),
    [("pg_asyncpg", "asyncpg", "asyncpg"), ("pg_async_session", "greenlet", "async")],
)
def test_a_missing_driver_names_the_extra(
    pytester: pytest.Pytester, runtime: Path, fixture: str, module: str, extra: str
) -> None:
    pytester.makeconftest(f"import sys\n\nsys.modules[{module!r}] = None  # not installed\n")
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.asyncio
        async def test_driver({fixture}):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-o", "asyncio_default_fixture_loop_scope=function")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*pip install 'pytest-pgsandbox[[]{extra}[]]'*"])


def test_connections_opened_ahead_survive_a_repaired_database(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_first(pg_async_conn):  # starts the connections opened ahead
            await pg_async_conn.execute("SELECT 1")

        def test_commits_as_sql(pg):  # the database is dropped and made again afterwards
            pg.execute("CREATE TABLE t (id int)")
            pg.execute("COMMIT")

        @pytest.mark.asyncio
        @pytest.mark.parametrize("n", range(3))
        async def test_after(pg_async_conn, n):
            cur = await pg_async_conn.execute("SELECT to_regclass('t')")
            assert (await cur.fetchone())[0] is None
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-o", "asyncio_default_fixture_loop_scope=function"
    )
    result.assert_outcomes(passed=5, errors=1)


def test_a_kept_connection_forgets_what_the_rollback_removed(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    # psycopg prepares a query run often enough; the same text in the next test must not
    # reach a statement prepared on a table the rollback removed. And the sessions share one
    # SQLAlchemy engine: its second test, on a loop of its own, works as the first.
    pytester.makepyfile(
        """
        import pytest
        from sqlalchemy import text

        @pytest.mark.asyncio
        @pytest.mark.parametrize("n", range(2))
        async def test_prepared(pg_async_conn, n):
            await pg_async_conn.execute(f"CREATE TABLE t (id int, v{n} int)")
            for _ in range(7):
                cur = await pg_async_conn.execute("SELECT * FROM t")
                assert [d.name for d in cur.description] == ["id", f"v{n}"]

        @pytest.mark.asyncio
        @pytest.mark.parametrize("n", range(2))
        async def test_session(pg_async_session, n):
            await pg_async_session.execute(text("CREATE TABLE s (id int)"))
            await pg_async_session.commit()
            assert (await pg_async_session.execute(text("SELECT count(*) FROM s"))).scalar() == 0
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-o", "asyncio_default_fixture_loop_scope=function"
    )
    result.assert_outcomes(passed=4)
