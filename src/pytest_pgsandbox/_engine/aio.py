"""Async connections to the test's database, with the guarantees of the sync ones.

Under transaction isolation each async connection runs in an outer transaction of its own
that is rolled back when the test ends:

- psycopg 3: an ``AsyncConnection`` whose ``commit()``/``rollback()`` move a savepoint, as
  :class:`~pytest_pgsandbox._engine.isolation.SandboxConnection` does for the sync one;
- asyncpg: an outer ``Transaction``; the code's own ``conn.transaction()`` blocks become
  savepoints by themselves (asyncpg nests them);
- SQLAlchemy: an ``AsyncSession`` joined to such a connection with
  ``join_transaction_mode="create_savepoint"``.

Sequences moved by ``nextval()`` are put back after the rollback (rolling back does not undo
them). Under clone and reset isolation the connections are plain: they commit for real, and
the database is dropped or reset afterwards like the sync fixtures' one.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg import pq
from psycopg.pq import TransactionStatus

from pytest_pgsandbox._engine.isolation import SAVEPOINT
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox.errors import IsolationBroken
from pytest_pgsandbox.errors import PgSandboxError

_BROKEN = (
    "the test's outer transaction was ended by a COMMIT or ROLLBACK sent as SQL, so commit() "
    "and rollback() can no longer be kept inside it. Call commit() instead of executing "
    'COMMIT, or mark the test with @pytest.mark.pg(isolation="clone").'
)


class AsyncSandboxConnection(psycopg.AsyncConnection[Any]):
    """An async psycopg connection whose commit and rollback stay inside the test."""

    _pgsb_active: bool = False

    async def commit(self) -> None:
        if not self._pgsb_active:
            await super().commit()
            return
        status = self.info.transaction_status
        if status == TransactionStatus.INERROR:
            await self._pgsb_to_savepoint(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        elif status == TransactionStatus.INTRANS:
            await self._pgsb_to_savepoint(f"RELEASE SAVEPOINT {SAVEPOINT}; SAVEPOINT {SAVEPOINT}")
        else:
            await super().commit()

    async def rollback(self) -> None:
        if not self._pgsb_active:
            await super().rollback()
            return
        if self.info.transaction_status == TransactionStatus.IDLE:
            return
        await self._pgsb_to_savepoint(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")

    async def _pgsb_to_savepoint(self, statement: str) -> None:
        try:
            await self.execute(statement)
        except psycopg.errors.InvalidSavepointSpecification:
            await super().rollback()
            raise IsolationBroken(_BROKEN) from None


def _timeout(seconds: float) -> int:
    return max(1, round(seconds))


SEQUENCES = (
    "SELECT c.oid::bigint, pg_sequence_last_value(c.oid), s.seqstart "
    "FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'S' AND n.nspname NOT LIKE 'pg\\_temp%'"
)


def sequence_values(rows: Any) -> str:
    """Rows of SEQUENCES as SQL VALUES rows (numbers only: safe as text); "" if none."""
    return ", ".join(
        f"({int(oid):d}::oid, {'NULL' if last is None else int(last)}::bigint, {int(start):d})"
        for oid, last, start in rows
    )


async def sequence_snapshot(conn: Any, fetch: Any) -> str:
    """Where every sequence is now, as SQL VALUES rows (numbers only); "" if none."""
    return sequence_values(await fetch(SEQUENCES))


def sequence_restore(values: str) -> str:
    """SQL that puts back every sequence that moved from ``values`` ("" if none)."""
    if not values:
        return ""
    return (  # numbers only (formatted as int above): no injection possible
        "SELECT setval(v.seq::regclass, coalesce(v.last, v.start), v.last IS NOT NULL) "  # noqa: S608
        f"FROM (VALUES {values}) v(seq, last, start) "
        "WHERE pg_sequence_last_value(v.seq::regclass) IS DISTINCT FROM v.last"
    )


class Prefetch:
    """Connections to one database opened ahead by a thread: a new backend costs about as
    much as the rest of a test's setup, and under transaction isolation every async test of a
    worker connects to the same database. A connection that failed is not kept: the test then
    connects itself and gets the real error."""

    SIZE = 2

    def __init__(self, conninfo: str, timeout: float) -> None:
        self.conninfo = conninfo.encode()
        self.timeout = timeout
        self._ready: list[tuple[Any, str]] = []
        self.values: str | None = None  # the sequences between tests, once a test read them
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="pgsandbox-prefetch", daemon=True)
        self._thread.start()

    def take(self) -> tuple[Any, str] | None:
        """A connected ``PGconn`` that has run its first query (a new backend's first catalog
        reads cost milliseconds, paid here ahead) and what that query read, or None if none
        is ready (never waits)."""
        with self._cond:
            ready = self._ready.pop() if self._ready else None
            self._cond.notify_all()
        if ready is not None and ready[0].status != pq.ConnStatus.OK:
            ready[0].finish()
            return None
        return ready

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and len(self._ready) >= self.SIZE:
                    self._cond.wait()
                if self._closing:
                    return
            pgconn = pq.PGconn.connect(self.conninfo)
            result = pgconn.exec_(SEQUENCES.encode()) if pgconn.status == pq.ConnStatus.OK else None
            if result is None or result.status != pq.ExecStatus.TUPLES_OK:
                pgconn.finish()
                return  # tests connect themselves and report why
            rows = [
                tuple(None if (v := result.get_value(i, j)) is None else int(v) for j in range(3))
                for i in range(result.ntuples)
            ]
            with self._cond:
                if self._is_closing():  # close() may have come while connecting
                    pgconn.finish()
                    return
                self._ready.append((pgconn, sequence_values(rows)))

    def _is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(self.timeout)
        with self._cond:
            ready, self._ready = self._ready, []
        for pgconn, _values in ready:
            pgconn.finish()


_PREFETCH: dict[str, Prefetch] = {}
_PREFETCH_LOCK = threading.Lock()


def prefetch_for(info: ConnInfo, timeout: float) -> Prefetch:
    conninfo = info.conninfo() + f" connect_timeout={max(1, round(timeout))}"
    with _PREFETCH_LOCK:
        found = _PREFETCH.get(conninfo)
        if found is None:
            found = _PREFETCH[conninfo] = Prefetch(conninfo, timeout)
        return found


def close_prefetch() -> None:
    """Close the connections opened ahead (at the end of the session)."""
    with _PREFETCH_LOCK:
        found = list(_PREFETCH.values())
        _PREFETCH.clear()
    for prefetch in found:
        prefetch.close()


async def _snapshot(conn: psycopg.AsyncConnection[Any]) -> str:
    async def fetch(query: str) -> list[Any]:
        cur = await conn.execute(query)
        return await cur.fetchall()

    return await sequence_snapshot(conn, fetch)


class AsyncPsycopg:
    """The psycopg ``AsyncConnection`` of a test (``isolated``: in an outer transaction)."""

    def __init__(self, info: ConnInfo, isolated: bool, timeout: float = 60.0) -> None:
        self.info = info
        self.isolated = isolated
        self.timeout = timeout
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self._restore = ""

    async def open(self) -> psycopg.AsyncConnection[Any]:
        if not self.isolated:
            self.conn = await psycopg.AsyncConnection.connect(
                self.info.conninfo(), connect_timeout=_timeout(self.timeout)
            )
            return self.conn
        # Under transaction isolation the database is the worker's for the whole session:
        # take a connection opened ahead (the constructor is what connect() ends with).
        prefetch = prefetch_for(self.info, self.timeout)
        # Where the sequences are between tests: read once, by the first test, before its
        # body runs. (A connection made ahead may have read them while a test had moved them.)
        ready = prefetch.take() if prefetch.values is not None else None
        conn: AsyncSandboxConnection
        if ready is not None and prefetch.values is not None:
            conn = AsyncSandboxConnection(ready[0])
            snapshot = prefetch.values
            try:
                await conn.execute(f"SAVEPOINT {SAVEPOINT}")  # opens the outer transaction
            except psycopg.OperationalError:  # ended since (the database was replaced)
                await conn.close()
                ready = None
            else:
                self.conn = conn
                self._restore = sequence_restore(snapshot)
                conn._pgsb_active = True
                return conn
        if ready is None:
            conn = await AsyncSandboxConnection.connect(
                self.info.conninfo(), connect_timeout=_timeout(self.timeout)
            )
            snapshot = await _snapshot(conn)
            if prefetch.values is None:
                prefetch.values = snapshot
        self.conn = conn
        self._restore = sequence_restore(snapshot)
        await conn.commit()
        await conn.execute(f"SAVEPOINT {SAVEPOINT}")  # opens the outer transaction too
        conn._pgsb_active = True
        return conn

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None or conn.closed:
            return
        try:
            if isinstance(conn, AsyncSandboxConnection):
                conn._pgsb_active = False
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.rollback()
                if self._restore:
                    await conn.execute(self._restore)
                    await conn.commit()
        finally:
            await conn.close()


class AsyncPg:
    """The asyncpg connection of a test (``isolated``: in an outer transaction)."""

    def __init__(self, info: ConnInfo, isolated: bool, timeout: float = 60.0) -> None:
        self.info = info
        self.isolated = isolated
        self.timeout = timeout
        self.conn: Any = None
        self._outer: Any = None
        self._restore = ""

    async def open(self) -> Any:
        asyncpg = require_asyncpg()
        conn = await asyncpg.connect(dsn=self.info.url(), timeout=self.timeout)
        self.conn = conn
        if self.isolated:

            async def fetch(query: str) -> list[Any]:
                return [tuple(r) for r in await conn.fetch(query)]

            self._restore = sequence_restore(await sequence_snapshot(conn, fetch))
            self._outer = conn.transaction()
            await self._outer.start()
        return conn

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None or conn.is_closed():
            return
        try:
            if self._outer is not None:
                if not conn.is_in_transaction():
                    # A COMMIT/ROLLBACK sent as SQL ended the outer transaction: what it
                    # committed is already in the database; the caller repairs it.
                    self._outer = None
                    raise IsolationBroken(_BROKEN)
                await self._outer.rollback()
                self._outer = None
                if self._restore:
                    await conn.execute(self._restore)
        finally:
            await conn.close(timeout=self.timeout)


def require_asyncpg() -> Any:
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:
        raise PgSandboxError(
            "pg_asyncpg needs asyncpg: pip install 'pytest-pgsandbox[asyncpg]'"
        ) from None
    return asyncpg
