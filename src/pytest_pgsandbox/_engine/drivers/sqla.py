"""SQLAlchemy 2 on the test's own connection, so ``session.commit()`` stays in the test.

The engine's connections are the current test's psycopg connection, never closed by it; the
``Session`` joins the test's transaction with ``join_transaction_mode="create_savepoint"``,
so its commits and rollbacks are savepoints.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from pytest_pgsandbox.errors import PgSandboxError


def require_sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError:
        raise PgSandboxError(
            "this needs SQLAlchemy 2: pip install 'pytest-pgsandbox[sqlalchemy]'"
        ) from None
    return sqlalchemy


@functools.cache
def session_class() -> Any:
    """``sqlmodel.Session`` when SQLModel is installed (its ``.exec()`` works, and it is a
    SQLAlchemy ``Session`` all the same), else SQLAlchemy's ``Session``.

    SQLModel marks ``execute()`` deprecated in favour of ``exec()``; the tests' session keeps
    SQLAlchemy's own ``execute()``, so code written for SQLAlchemy raises no warning.
    """
    from sqlalchemy.orm import Session

    if importlib.util.find_spec("sqlmodel") is None:
        return Session
    from sqlmodel import Session as SQLModelSession

    return type("Session", (SQLModelSession,), {"execute": Session.execute})


@functools.cache
def async_session_class() -> Any:
    """SQLModel's ``AsyncSession`` when SQLModel is installed, else SQLAlchemy's (with
    SQLAlchemy's ``execute()`` as for :func:`session_class`)."""
    from sqlalchemy.ext.asyncio import AsyncSession

    if importlib.util.find_spec("sqlmodel") is None:
        return AsyncSession
    from sqlmodel.ext.asyncio.session import AsyncSession as SQLModelAsyncSession

    return type("AsyncSession", (SQLModelAsyncSession,), {"execute": AsyncSession.execute})


def make_engine(current: Callable[[], Any], driver: str = "psycopg") -> Any:
    """An Engine whose every connection is ``current()`` (the running test's connection).

    The pool never closes it (``do_close`` is a no-op for this engine's dialect) and never
    rolls it back on return: the connection belongs to the test, which pgsandbox rolls back.
    """
    sa = require_sqlalchemy()
    engine = sa.create_engine(
        f"postgresql+{driver}://",
        creator=current,
        poolclass=sa.pool.NullPool,
        pool_reset_on_return=None,
    )
    engine.dialect.do_close = _keep_open
    return engine


def _keep_open(dbapi_connection: Any) -> None:
    return None


def make_own_engine(connect: Callable[[], tuple[Any, bool]], driver: str = "psycopg") -> Any:
    """An Engine whose connections come from ``connect()``: ``(connection, shared)``.

    A shared connection (the running test's, under transaction isolation) is never closed by
    the pool. Any other is a connection of this engine's own on the test's database: each
    checkout opens one, each check-in closes it (which rolls back what was not committed), so
    two sessions on the engine behave as two clients of the database do.
    """
    sa = require_sqlalchemy()
    own: dict[int, Any] = {}

    def creator() -> Any:
        conn, shared = connect()
        if not shared:
            own[id(conn)] = conn
        return conn

    def close(dbapi_connection: Any) -> None:
        if own.pop(id(dbapi_connection), None) is not None:
            dbapi_connection.close()

    def close_all() -> None:
        """Close the connections still open (checked out when the test ended)."""
        while own:
            _, conn = own.popitem()
            with contextlib.suppress(Exception):
                conn.close()

    engine = sa.create_engine(
        f"postgresql+{driver}://",
        creator=creator,
        poolclass=sa.pool.NullPool,
        pool_reset_on_return=None,
    )
    engine.dialect.do_close = close
    engine._pgsb_close_all = close_all
    return engine


def make_async_engine(current: Callable[[], Any]) -> Any:
    """An ``AsyncEngine`` whose every connection is ``current()``, a psycopg
    ``AsyncConnection`` the test owns: never closed nor rolled back by the pool."""
    require_sqlalchemy()
    try:
        importlib.import_module("greenlet")  # SQLAlchemy's asyncio extension runs on it
    except ImportError:
        raise PgSandboxError(
            "pg_async_session needs SQLAlchemy's asyncio extension: "
            "pip install 'pytest-pgsandbox[async]'"
        ) from None
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    async def creator() -> Any:
        return current()

    engine = create_async_engine(
        "postgresql+psycopg://",
        async_creator=creator,
        poolclass=NullPool,
        pool_reset_on_return=None,
    )
    dialect: Any = engine.sync_engine.dialect
    dialect.do_close = _keep_open
    # The dialect reads the server once, on its first connection, and registers hstore's
    # adapters on that connection only (later ones would get them from a pool of its own):
    # keep what it found, and give each connection the same.
    found: dict[str, Any] = {}
    fetch = dialect._type_info_fetch

    def type_info_fetch(connection: Any, name: str) -> Any:
        found[name] = info = fetch(connection, name)
        return info

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        info = found.get("hstore")
        if info is not None:
            from psycopg.types.hstore import register_hstore

            register_hstore(info, dbapi_connection.driver_connection)

    dialect._type_info_fetch = type_info_fetch
    event.listen(engine.sync_engine, "connect", on_connect)
    return engine


class SharedAsyncEngine:
    """One ``AsyncEngine`` for every test of the process, on the running test's connection.

    Making an engine is cheap; its dialect's first connection is not (it reads the server's
    version, settings and types in several round trips). Its connections are the tests' own,
    so nothing in it belongs to an event loop: tests on loops of their own share it.
    """

    def __init__(self) -> None:
        self.conn: Any = None
        self._engine: Any = None

    def engine_for(self, conn: Any) -> Any:
        """The engine, its next connection being ``conn``."""
        self.conn = conn
        if self._engine is None:
            self._engine = make_async_engine(lambda: self.conn)
        return self._engine


SHARED_ASYNC = SharedAsyncEngine()
