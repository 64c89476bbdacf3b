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
from pytest_pgsandbox._engine.isolation.transaction import guard_block
from pytest_pgsandbox._engine.isolation.transaction import guard_sql
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

    A psycopg ``AsyncConnection`` is not bound to an event loop: it waits on its socket with
    whichever loop is running when it is awaited (only its lock is the loop's, and ``take``
    gives it a new one). So tests on loops of their own (pytest-asyncio's function-scoped
    loops, anyio's runner per test) share it too.
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


_IDLE: dict[ConnInfo, Idle] = {}


def idle_for(info: ConnInfo) -> Idle:
    return _IDLE.setdefault(info, Idle())


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
        if self._idle.values is None:
            # Read once, by the first test, before its body runs: between tests the
            # sequences are where it found them.
            self._idle.values = await _snapshot(conn)
        self.conn = conn
        self._restore = restore_sql(self._idle.values)
        if self._restore:
            # As the sync connection has: after a test, the sequences are checked only if
            # this session called nextval() (checking 30 of them costs more than the rest).
            await conn.execute(guard_sql(self._restore))
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
                    # Outside a transaction (psycopg would open one): a backend that exits
                    # idle in a transaction looks to a reset like work left open.
                    await _batch(conn, "SELECT pg_advisory_unlock_all()")
            else:
                conn._pgsb_active = False
                keep = await self._end(conn) and self._idle is not None
        finally:
            if keep and self._idle is not None and isinstance(conn, AsyncSandboxConnection):
                self._idle.connections.append(conn)
            else:
                await conn.close()

    async def _end(self, conn: AsyncSandboxConnection) -> bool:
        """Roll the test back, put back its sequences and session advisory locks (they
        outlive the rollback; the next test must not inherit them), in one round trip when
        the test ends in a healthy transaction. Whether the connection may be kept."""
        status = conn.info.transaction_status
        if status == TransactionStatus.ACTIVE or conn._pipeline is not None:
            await conn.rollback()  # psycopg's own: it knows how to get out of these
            status = conn.info.transaction_status
        # PREPARE is not rolled back either.
        unlock = "DISCARD SEQUENCES; DEALLOCATE ALL; SELECT pg_advisory_unlock_all()"
        check = "SELECT pg_temp.pgsandbox_sequences(); " if self._restore else ""
        if status == TransactionStatus.INTRANS:
            # The sequences inside the test's transaction (as ourselves, not the test's role)
            # and again after the rollback: a sequence the test made and moved last answers
            # lastval() only before it (then it is gone, hiding the moves of the others); a
            # sequence the test gave a new file (TRUNCATE ... RESTART IDENTITY) is set back
            # only after it (the rollback brings back its old file, moved or not).
            reset_role = "RESET ROLE; " if check else ""
            statements = f"{reset_role}{check}ROLLBACK; {check}{unlock}"
        elif status == TransactionStatus.INERROR:
            statements = f"ROLLBACK; {self._restore + '; ' if self._restore else ''}{unlock}"
        else:
            # A COMMIT or ROLLBACK sent as SQL ended the outer transaction: what the test did
            # after it (a SET, say) belongs to the session. Put back, then not kept.
            statements = f"{check}{unlock}"
        # The statements psycopg prepared may name objects the rollback removes: forgotten
        # (and deallocated) as psycopg's own rollback does.
        forget = conn._prepared.clear()
        try:
            await _batch(conn, statements)
        except psycopg.Error:
            # The test dropped the check (DISCARD ALL) or a sequence of the snapshot: the
            # long way, on a connection not kept.
            if conn.info.transaction_status != TransactionStatus.IDLE:
                await _batch(conn, "ROLLBACK")
            await _batch(conn, "; ".join(x for x in (self._restore, unlock) if x))
            return False
        if forget:  # psycopg's own bookkeeping: one round trip more, only if it prepared
            await conn.wait(conn._prepared.maintain_gen(conn))
        return status != TransactionStatus.IDLE and (
            conn.info.transaction_status == TransactionStatus.IDLE
        )


class KeptAsyncpg:
    """asyncpg connections of ended tests, kept for the next tests on the same event loop
    (transaction isolation, a loop wider than one test: pytest-asyncio's ``loop_scope``).

    An asyncpg connection belongs to the loop that made it, so with a loop per test each test
    connects anew (a new backend: most of its cost); a loop that outlives the test lets the
    next one take the connection over. It is handed on as a new one would be: rolled back,
    its sequences, advisory locks, prepared statements (asyncpg's cache too), cursors,
    listeners and type cache put back or emptied. ``close()`` ends them while their loop is
    still open (the scope's own fixture, torn down before the loop).
    """

    def __init__(self) -> None:
        self.connections: list[tuple[ConnInfo, Any, Any]] = []  # (info, loop, connection)

    def take(self, info: ConnInfo) -> Any:
        loop = asyncio.get_running_loop()
        for i, (kept_info, kept_loop, conn) in enumerate(self.connections):
            if kept_info == info and kept_loop is loop:
                del self.connections[i]
                if not conn.is_closed():
                    return conn
                break
        return None

    def put(self, info: ConnInfo, conn: Any) -> None:
        self.connections.append((info, asyncio.get_running_loop(), conn))

    def close(self) -> None:
        connections, self.connections = self.connections, []
        for _info, loop, conn in connections:
            with contextlib.suppress(Exception):
                conn.terminate()  # its transport closes as the loop runs its last callbacks
                if not loop.is_closed() and not loop.is_running():
                    loop.run_until_complete(asyncio.sleep(0))


# The parts of an asyncpg connection that its own state lives in: without one of them (another
# asyncpg version), a connection is not handed on.
_ASYNCPG_STATE = ("_mark_stmts_as_closed", "_drop_local_type_cache", "_listeners", "_log_listeners")


class AsyncPg:
    """The asyncpg connection of a test (``isolated``: in an outer transaction)."""

    def __init__(
        self,
        info: ConnInfo,
        isolated: bool,
        timeout: float = 60.0,
        set_role: str = "",
        kept: KeptAsyncpg | None = None,
    ) -> None:
        self.info = info
        self.isolated = isolated
        self.timeout = timeout
        self.set_role = set_role
        self.kept = kept if isolated else None  # only the worker's one database is the same
        self.conn: Any = None
        self._outer: Any = None
        self._restore = ""

    async def open(self) -> Any:
        asyncpg = require_asyncpg()
        conn = self.kept.take(self.info) if self.kept is not None else None
        if conn is not None:
            try:
                await self._begin(conn)
                return conn
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                conn.terminate()  # ended since (the database was replaced): a new one
        conn = await asyncpg.connect(dsn=self.info.url(), timeout=self.timeout)
        await self._begin(conn)
        return conn

    async def _begin(self, conn: Any) -> None:
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

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None or conn.is_closed():
            return
        ended = handed_on = False
        try:
            if self._outer is not None:
                if not conn.is_in_transaction():
                    # A COMMIT/ROLLBACK sent as SQL ended the outer transaction: what it
                    # committed is already in the database; the caller repairs it.
                    self._outer = None
                    raise IsolationBroken(_BROKEN)
                if self.kept is not None and all(hasattr(conn, a) for a in _ASYNCPG_STATE):
                    handed_on = await self._hand_on(conn)
                else:
                    await self._end(conn)
                ended = True
            elif not conn.is_in_transaction():
                # As for psycopg: session locks go before close(), not as the backend exits.
                await conn.execute("SELECT pg_advisory_unlock_all()")
        finally:
            if handed_on and self.kept is not None:
                self.kept.put(self.info, conn)
            elif ended:
                # Nothing of the session is left to wait for: its transaction is rolled
                # back, its locks and sequences put back. Waiting for the backend to exit
                # (close()) would cost more than the test's own statements.
                conn.terminate()
            else:
                await conn.close(timeout=self.timeout)

    async def _hand_on(self, conn: Any) -> bool:
        """Roll back as ``_end`` does, through asyncpg's own transaction (it must know the
        connection is out of it), and leave the session as a new one: whether that worked."""
        asyncpg = require_asyncpg()
        block = f"{guard_block(self._restore)}; " if self._restore else ""
        outer, self._outer = self._outer, None
        try:
            if block:
                await conn.execute(f"RESET ROLE; {block}")
            await outer.rollback()
            # Session state a rollback leaves: sequences' currval, prepared statements
            # (asyncpg's among them), cursors WITH HOLD, advisory locks.
            await conn.execute(
                f"{block}DISCARD SEQUENCES; DEALLOCATE ALL; CLOSE ALL; "
                "SELECT pg_advisory_unlock_all()"
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError):
            if conn.is_in_transaction():
                await conn.execute("ROLLBACK")
            rest = "; ".join(x for x in (self._restore, "SELECT pg_advisory_unlock_all()") if x)
            await conn.execute(rest)
            return False
        conn._mark_stmts_as_closed()  # deallocated above
        conn._drop_local_type_cache()  # types the test made are gone
        conn._listeners.clear()  # UNLISTEN: the rollback undid the test's LISTEN
        conn._log_listeners.clear()
        return True

    async def _end(self, conn: Any) -> None:
        """Roll the outer transaction back; put back the sequences and session advisory
        locks, in one round trip when the transaction is healthy (asyncpg does not say)."""
        asyncpg = require_asyncpg()
        unlock = "SELECT pg_advisory_unlock_all()"
        # The sequences inside the transaction and after it (see AsyncPsycopg._end), only
        # if this short session called nextval(): a block, not a function of its own.
        block = f"{guard_block(self._restore)}; " if self._restore else ""
        check = f"RESET ROLE; {block}" if block else ""
        self._outer = None  # ended here, by SQL: asyncpg's object is not used again
        try:
            await conn.execute(f"{check}ROLLBACK; {block}{unlock}")
        except asyncpg.PostgresError:  # a failed transaction, or a sequence the test dropped
            rest = "; ".join(x for x in (self._restore, unlock) if x)
            await conn.execute(f"ROLLBACK; {rest}")


def require_asyncpg() -> Any:
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:
        raise PgSandboxError(
            "pg_asyncpg needs asyncpg: pip install 'pytest-pgsandbox[asyncpg]'"
        ) from None
    return asyncpg
