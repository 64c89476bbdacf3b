"""Async fixtures: psycopg 3 ``AsyncConnection``, asyncpg, SQLAlchemy ``AsyncSession``.

Neither pytest-asyncio nor anyio is required; whichever runs the test also runs the
fixture, on the test's own event loop:

- ``pg_async_conn``, ``pg_asyncpg``, ``pg_async_session`` are plain fixtures that look at the
  test: an asyncio test (pytest-asyncio, any ``loop_scope``) gets an async fixture made for
  pytest-asyncio with the same loop scope; an anyio test (``anyio_backend``) a plain async
  fixture, which anyio runs. The drivers run on asyncio only: under trio they skip.
- Each builds on ``pg``: the same database, isolation, ``keep`` and verification. Under
  transaction isolation an async connection has an outer transaction of its own (two
  connections do not see each other's uncommitted rows); under clone and reset it commits for
  real, and ``pg_asyncpg_pool`` gives the code under test a pool on ``pg.url``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any
from typing import cast

import pytest

from pytest_pgsandbox._engine.handle import PgDatabase

if TYPE_CHECKING:  # aio imports psycopg's async parts: only when a fixture needs them
    from pytest_pgsandbox._engine.drivers.aio import AsyncPsycopg

SCOPES = ("function", "class", "module", "package", "session")
KINDS = ("async_conn", "asyncpg", "async_session", "asyncpg_pool")
_ASYNCIO_ONLY = (
    "{fixture} runs on asyncio only ({driver} has no trio support); this test runs on "
    "{backend}. Give anyio_backend the value 'asyncio' in conftest.py to run it."
)


# -- the work, the same for both plugins -----------------------------------------------


async def _owned(owner: Any) -> AsyncGenerator[Any, None]:
    """``owner.open()``'s connection, then ``owner.close()``."""
    try:
        yield await owner.open()
    finally:
        await owner.close()


def _async_conn(pg: PgDatabase) -> AsyncGenerator[Any, None]:
    return _owned(_psycopg_owner(pg))


def _psycopg_owner(pg: PgDatabase) -> AsyncPsycopg:
    """The test's own async connection (where it goes: ``PgDatabase.driver_target``)."""
    from pytest_pgsandbox._engine.drivers.aio import AsyncPsycopg

    info, isolated, set_role = pg.driver_target()
    return AsyncPsycopg(info, isolated=isolated, set_role=set_role)


def _asyncpg(pg: PgDatabase, kept: Any = None) -> AsyncGenerator[Any, None]:
    from pytest_pgsandbox._engine.drivers.aio import AsyncPg

    info, isolated, set_role = pg.driver_target()
    return _owned(AsyncPg(info, isolated=isolated, set_role=set_role, kept=kept))


async def _async_session(pg: PgDatabase) -> AsyncGenerator[Any, None]:
    from pytest_pgsandbox._engine.drivers.sqla import SHARED_ASYNC
    from pytest_pgsandbox._engine.drivers.sqla import async_session_class

    owner = _psycopg_owner(pg)
    conn = await owner.open()
    try:
        engine = SHARED_ASYNC.engine_for(conn)  # its dialect set up once, by the first test
        AsyncSession = async_session_class()

        async with engine.connect() as connection:
            mode = "create_savepoint" if pg.isolation == "transaction" else "conditional_savepoint"
            session = AsyncSession(
                bind=connection, join_transaction_mode=mode, expire_on_commit=False
            )
            try:
                yield session
            finally:
                await _end_session(session, pg.isolation)
    finally:
        SHARED_ASYNC.conn = None
        await owner.close()


async def _end_session(session: Any, isolation: str) -> None:
    """Close the test's session. Under transaction isolation the test's rollback undoes all
    it did: invalidated, its connection is let go without two rollbacks of its own first
    (its savepoint's, then the connection's), which would cost two round trips."""
    if isolation == "transaction":
        await session.invalidate()
    else:
        await session.close()


async def _asyncpg_pool(pg: PgDatabase) -> AsyncGenerator[Callable[..., Any], None]:
    from pytest_pgsandbox._engine.drivers.aio import require_asyncpg

    url = pg.url  # an error with a hint under transaction isolation
    asyncpg = require_asyncpg()
    pools: list[Any] = []

    async def make(**kwargs: Any) -> Any:
        pool = await asyncpg.create_pool(dsn=url, **kwargs)
        pools.append(pool)
        return pool

    try:
        yield make
    finally:
        for pool in pools:
            with contextlib.suppress(Exception):
                await pool.close()


_WORK = {
    "async_conn": _async_conn,
    "asyncpg": _asyncpg,
    "async_session": _async_session,
    "asyncpg_pool": _asyncpg_pool,
}
_DRIVER = {
    "async_conn": "psycopg",
    "asyncpg": "asyncpg",
    "async_session": "SQLAlchemy's asyncio extension",
    "asyncpg_pool": "asyncpg",
}


# -- one hidden fixture per plugin (and loop scope), one public fixture that routes ---------


async def _clean_failures(kind: str, pg: PgDatabase, kept: Any = None) -> AsyncGenerator[Any, None]:
    """The work of ``kind``; a missing driver or a database error fails the test with the
    message alone (no traceback from inside the driver). ``kept``: where asyncpg
    connections wait for the next test on the same event loop (loops wider than a test)."""
    __tracebackhide__ = True
    import psycopg

    from pytest_pgsandbox.errors import PgSandboxError

    work: AsyncGenerator[Any, None] = _asyncpg(pg, kept) if kind == "asyncpg" else _WORK[kind](pg)
    try:
        value = await work.__anext__()
    except (PgSandboxError, psycopg.Error) as exc:
        error = f"pgsandbox: {_PUBLIC[kind]}: {str(exc).strip()}"
    else:
        try:
            yield value
        finally:
            await work.aclose()  # the work's own teardown (its finally blocks)
        return
    await work.aclose()
    pytest.fail(error, pytrace=False)


_PUBLIC = {kind: f"pg_{kind}" for kind in KINDS}


def _make_anyio(kind: str) -> Any:
    def work(pg: PgDatabase) -> AsyncIterator[Any]:
        return _clean_failures(kind, pg)

    async def fixture(pg: PgDatabase, anyio_backend: Any) -> AsyncIterator[Any]:
        async for value in work(pg):
            yield value

    return pytest.fixture(name=f"_pgsb_{kind}_anyio")(fixture)


def _make_asyncio(kind: str, scope: str) -> Any:
    import pytest_asyncio

    keeps = kind == "asyncpg" and scope != "function"

    async def fixture(pg: PgDatabase, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
        # An asyncpg connection belongs to its event loop: on a loop that outlives the test
        # the next test of that loop takes it over, instead of a new backend of its own.
        # Asked for here, on the loop: set up after it, so closed before it is.
        kept = request.getfixturevalue(f"_pgsb_asyncpg_kept_{scope}") if keeps else None
        async for value in _clean_failures(kind, pg, kept):
            yield value

    loop_scope: Any = scope
    return pytest_asyncio.fixture(
        fixture, loop_scope=loop_scope, name=f"_pgsb_{kind}_asyncio_{scope}"
    )


def _make_kept(scope: str) -> Any:
    def kept() -> Iterator[Any]:
        from pytest_pgsandbox._engine.drivers.aio import KeptAsyncpg

        found = KeptAsyncpg()
        yield found
        found.close()  # before the loop of the scope closes: nothing of it is left open

    return pytest.fixture(scope=cast(Any, scope), name=f"_pgsb_asyncpg_kept_{scope}")(kept)


def _asyncio_loop_scope(request: pytest.FixtureRequest) -> str | None:
    """The loop scope pytest-asyncio runs this test with, or None if it does not run it."""
    try:
        import pytest_asyncio
    except ImportError:
        return None
    if not pytest_asyncio.is_async_test(request.node):
        return None
    marker = request.node.get_closest_marker("asyncio")
    scope = marker.kwargs.get("loop_scope") if marker else None
    if not scope:
        try:
            scope = request.config.getini("asyncio_default_test_loop_scope")
        except ValueError:  # pytest-asyncio before 1.0
            scope = None
    return str(scope or "function")


def _route(request: pytest.FixtureRequest, kind: str) -> Any:
    __tracebackhide__ = True
    public = f"pg_{kind}"
    scope = _asyncio_loop_scope(request)
    if scope is not None:
        return request.getfixturevalue(f"_pgsb_{kind}_asyncio_{scope}")
    if "anyio_backend" in request.fixturenames:
        backend = request.getfixturevalue("anyio_backend")
        name = backend if isinstance(backend, str) else backend[0]
        if name != "asyncio":
            pytest.skip(_ASYNCIO_ONLY.format(fixture=public, driver=_DRIVER[kind], backend=name))
        return request.getfixturevalue(f"_pgsb_{kind}_anyio")
    pytest.fail(
        f"pgsandbox: {public} needs an async test run by pytest-asyncio (mark it with "
        "@pytest.mark.asyncio, or set asyncio_mode = auto) or by anyio (@pytest.mark.anyio). "
        "Neither runs this one.",
        pytrace=False,
    )


@pytest.fixture
def pg_async_conn(request: pytest.FixtureRequest) -> Any:
    """A psycopg 3 ``AsyncConnection`` to this test's database (see the module's notes).

    Under transaction isolation ``await conn.commit()`` is a savepoint, rolled back with the
    test; under clone and reset it commits for real.
    """
    return _route(request, "async_conn")


@pytest.fixture
def pg_asyncpg(request: pytest.FixtureRequest) -> Any:
    """An asyncpg connection to this test's database. Under transaction isolation it runs
    in an outer transaction rolled back after the test; ``conn.transaction()`` blocks
    become savepoints."""
    return _route(request, "asyncpg")


@pytest.fixture
def pg_async_session(request: pytest.FixtureRequest) -> Any:
    """A SQLAlchemy 2 ``AsyncSession`` on this test's database. Under transaction isolation
    ``await session.commit()`` is a savepoint; under clone and reset it commits for real."""
    return _route(request, "async_session")


@pytest.fixture
def pg_asyncpg_pool(request: pytest.FixtureRequest) -> Any:
    """``await pg_asyncpg_pool(**create_pool_kwargs)``: an asyncpg pool on ``pg.url``, for
    code under test that opens its own (clone and reset isolation); closed afterwards."""
    return _route(request, "asyncpg_pool")


for _kind in KINDS:
    globals()[f"_pgsb_{_kind}_anyio"] = _make_anyio(_kind)
try:
    import pytest_asyncio as _pytest_asyncio  # noqa: F401
except ImportError:
    pass
else:
    for _kind in KINDS:
        for _scope in SCOPES:
            globals()[f"_pgsb_{_kind}_asyncio_{_scope}"] = _make_asyncio(_kind, _scope)
    for _scope in SCOPES[1:]:
        globals()[f"_pgsb_asyncpg_kept_{_scope}"] = _make_kept(_scope)
