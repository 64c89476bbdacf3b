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
