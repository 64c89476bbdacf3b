"""Async connections to the test's database, with the guarantees of the sync ones.

Under transaction isolation each async connection runs in an outer transaction of its own
that is rolled back when the test ends:

- psycopg 3: an ``AsyncConnection`` whose ``commit()``/``rollback()`` move a savepoint, as
  :class:`~pytest_pgsandbox._engine.isolation.transaction.SandboxConnection` does for the sync one;
- asyncpg: an outer ``Transaction``; the code's own ``conn.transaction()`` blocks become
  savepoints by themselves (asyncpg nests them);
- SQLAlchemy: an ``AsyncSession`` joined to such a connection with
  ``join_transaction_mode="create_savepoint"``.

Sequences moved by ``nextval()`` are put back after the rollback (rolling back does not undo
them). Under clone and reset isolation the connections are plain: they commit for real, and
the database is dropped or reset afterwards like the sync fixtures' one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
from psycopg import errors
from psycopg import generators
from psycopg.pq import ExecStatus
from psycopg.pq import TransactionStatus

from pytest_pgsandbox._engine.isolation.transaction import SAVEPOINT
from pytest_pgsandbox._engine.isolation.transaction import SEQUENCES
from pytest_pgsandbox._engine.isolation.transaction import restore_sql
from pytest_pgsandbox._engine.isolation.transaction import values_of
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


class Idle:
    """The psycopg connections of ended tests, kept for the next ones (transaction isolation).

    Every async test of a worker connects to the same database, and a new backend costs more
    than the rest of the test's setup (connecting, then its first catalog reads). A test's
    connection is rolled back, its sequences and advisory locks put back, and the next test
    takes it; a connection that ended meanwhile is replaced.
    """

    def __init__(self) -> None:
        self.connections: list[AsyncSandboxConnection] = []
        self.values: str | None = None  # the sequences between tests, once a test read them

    def take(self) -> AsyncSandboxConnection | None:
        while self.connections:
            conn = self.connections.pop()
            if not conn.closed and not conn.broken:
                # Its lock may be bound to the event loop of the test that used it last.
                conn.lock = asyncio.Lock()
                return conn
        return None

    def close(self) -> None:
        connections, self.connections = self.connections, []
        for conn in connections:
            conn.pgconn.finish()  # no event loop needed; the server rolls nothing back


_IDLE: dict[str, Idle] = {}


def idle_for(info: ConnInfo) -> Idle:
    return _IDLE.setdefault(info.conninfo(), Idle())


def close_idle() -> None:
    """Close the connections kept for later tests (at the end of the session)."""
    found = list(_IDLE.values())
    _IDLE.clear()
    for idle in found:
        idle.close()


async def _batch(conn: psycopg.AsyncConnection[Any], statements: str) -> None:
    """Run ``statements`` in one round trip (psycopg would add one for its own ``BEGIN``).

    Only for our own fixed statements: they go to libpq as they are.
    """
    async with conn.lock:
        conn.pgconn.send_query(statements.encode())
        results = await conn.wait(generators.execute(conn.pgconn))
    for result in results:
        if result.status not in (ExecStatus.COMMAND_OK, ExecStatus.TUPLES_OK):
            raise errors.error_from_result(result, encoding=conn.info.encoding)


async def _snapshot(conn: psycopg.AsyncConnection[Any]) -> str:
    cur = await conn.execute(SEQUENCES)
    return values_of(await cur.fetchall())


class AsyncPsycopg:
    """The psycopg ``AsyncConnection`` of a test (``isolated``: in an outer transaction)."""

    def __init__(
        self, info: ConnInfo, isolated: bool, timeout: float = 60.0, set_role: str = ""
    ) -> None:
        self.info = info
        self.isolated = isolated
        self.timeout = timeout
        self.set_role = set_role  # "SET LOCAL ROLE ...; ": first in the outer transaction
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self._restore = ""
        self._idle: Idle | None = None

    async def open(self) -> psycopg.AsyncConnection[Any]:
        if not self.isolated:
            self.conn = await psycopg.AsyncConnection.connect(
                self.info.conninfo(), connect_timeout=_timeout(self.timeout)
            )
            return self.conn
        # Under transaction isolation the database is the worker's for the whole session:
        # the connection of the test before, if it is still there.
        self._idle = idle_for(self.info)
        conn = self._idle.take()
        if conn is not None and self._idle.values is not None:
            try:
                # Opens the outer transaction.
                await _batch(conn, f"BEGIN; {self.set_role}SAVEPOINT {SAVEPOINT}")
            except psycopg.OperationalError:  # ended since (the database was replaced)
                await conn.close()
            else:
                self.conn = conn
                self._restore = restore_sql(self._idle.values)
                conn._pgsb_active = True
                return conn
        conn = await AsyncSandboxConnection.connect(
            self.info.conninfo(), connect_timeout=_timeout(self.timeout)
        )
        snapshot = await _snapshot(conn)
        if self._idle.values is None:
            # Read once, by the first test, before its body runs: between tests the
            # sequences are where it found them.
            self._idle.values = snapshot
        self.conn = conn
        self._restore = restore_sql(snapshot)
        await conn.commit()
        await conn.execute(f"{self.set_role}SAVEPOINT {SAVEPOINT}")  # opens it too
        conn._pgsb_active = True
        return conn

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None or conn.closed:
            return
        keep = False
        try:
            if not isinstance(conn, AsyncSandboxConnection):
                # A closed connection's backend lets go of its session locks only as it
                # exits, after close() returns: the next test could still find them.
                with contextlib.suppress(psycopg.Error):
                    await conn.rollback()
                    await conn.execute("SELECT pg_advisory_unlock_all()")
            else:
                conn._pgsb_active = False
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    # psycopg's own rollback: it also forgets the statements it prepared,
                    # which may name objects the rollback removed.
                    await conn.rollback()
                # Session advisory locks outlive the rollback; the next test must not inherit
                # them (nor moved sequences). One round trip, no BEGIN of psycopg's; ends idle.
                statements = [self._restore, "SELECT pg_advisory_unlock_all()"]
                await _batch(conn, "; ".join(x for x in statements if x))
                keep = self._idle is not None and conn.info.transaction_status == (
                    TransactionStatus.IDLE
                )
        finally:
            if keep and self._idle is not None and isinstance(conn, AsyncSandboxConnection):
                self._idle.connections.append(conn)
            else:
                await conn.close()


class AsyncPg:
    """The asyncpg connection of a test (``isolated``: in an outer transaction)."""

    def __init__(
        self, info: ConnInfo, isolated: bool, timeout: float = 60.0, set_role: str = ""
    ) -> None:
        self.info = info
        self.isolated = isolated
        self.timeout = timeout
        self.set_role = set_role
        self.conn: Any = None
        self._outer: Any = None
        self._restore = ""

    async def open(self) -> Any:
        asyncpg = require_asyncpg()
        conn = await asyncpg.connect(dsn=self.info.url(), timeout=self.timeout)
        self.conn = conn
        if self.isolated:
            # Between tests the sequences are where the worker's first test found them.
            idle = idle_for(self.info)
            if idle.values is None:
                idle.values = values_of(await conn.fetch(SEQUENCES))
            self._restore = restore_sql(idle.values)
            self._outer = conn.transaction()
            await self._outer.start()
            if self.set_role:
                await conn.execute(self.set_role)
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
            # As for psycopg: session locks go before close(), not as the backend exits.
            # With the sequences, in one round trip.
            if not conn.is_in_transaction():
                statements = [self._restore, "SELECT pg_advisory_unlock_all()"]
                await conn.execute("; ".join(x for x in statements if x))
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
