"""Transaction isolation: each test runs inside an outer transaction that is rolled back.

The test's connection is a ``SandboxConnection``: its ``commit()`` releases and re-creates a
savepoint, and its ``rollback()`` rolls back to it, so application code that commits keeps
working while nothing reaches the database for good. ``with conn.transaction()`` blocks become
savepoints by themselves (psycopg does that inside a transaction).

A ``COMMIT`` sent as SQL does end the outer transaction. That is found when the test ends
(the outer transaction's id shows as committed), reported, and the database is repaired.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors
from psycopg.pq import ConnStatus
from psycopg.pq import ExecStatus
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg.rows import tuple_row

from pytest_pgsandbox._engine.urls import APPLICATION_NAME
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import IsolationBroken

SAVEPOINT = "pgsandbox_test"

_FORBIDDEN_IN_BLOCK = (
    "Explicit {}() forbidden within a Transaction context. (Transaction will be "
    "automatically {} on successful exit from context.)"
)


class SandboxConnection(psycopg.Connection[TupleRow]):
    """A psycopg connection whose commit and rollback stay inside the test's transaction."""

    _pgsb_active: bool = False
    _pgsb_broken: bool = False

    def _pgsb_check_block(self, what: str, done: str) -> None:
        if getattr(self, "_num_transactions", 0):
            raise psycopg.ProgrammingError(_FORBIDDEN_IN_BLOCK.format(what, done))

    def commit(self) -> None:
        __tracebackhide__ = True
        if not self._pgsb_active:
            super().commit()
            return
        self._pgsb_check_block("commit", "committed")
        status = self.info.transaction_status
        if status == TransactionStatus.INERROR:
            # COMMIT of a failed transaction rolls it back; do the same to the savepoint.
            self._pgsb_to_savepoint(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        elif status == TransactionStatus.INTRANS:
            self._pgsb_to_savepoint(f"RELEASE SAVEPOINT {SAVEPOINT}; SAVEPOINT {SAVEPOINT}")
        else:
            super().commit()

    def rollback(self) -> None:
        __tracebackhide__ = True
        if not self._pgsb_active:
            super().rollback()
            return
        self._pgsb_check_block("rollback", "rolled back")
        if self.info.transaction_status == TransactionStatus.IDLE:
            return
        self._pgsb_to_savepoint(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")

    def _pgsb_to_savepoint(self, statement: str) -> None:
        __tracebackhide__ = True  # test reports show the caller's line, not ours
        try:
            self.execute(statement)
        except errors.InvalidSavepointSpecification:
            # The outer transaction was ended by SQL (COMMIT/ROLLBACK) earlier in the test.
            self._pgsb_broken = True
            super().rollback()
            raise IsolationBroken(
                "the test's outer transaction was ended by a COMMIT or ROLLBACK sent as SQL, "
                "so commit() and rollback() can no longer be kept inside it. Call "
                "conn.commit() instead of executing COMMIT, or mark the test with "
                '@pytest.mark.pg(isolation="clone") to let it commit for real.'
            ) from None


class TransactionIsolation:
    """One connection to the test database, reused by every test of the session."""

    def __init__(
        self,
        info: ConnInfo,
        repair: Callable[[], None],
        connect_timeout: float = 60.0,
        set_role: str = "",
    ) -> None:
        self.info = info
        # "SET LOCAL ROLE ...; " when tests run as a role: before the savepoint, so that the
        # test's own rollbacks keep it; the rollback after the test ends it.
        self._set_role = set_role
        self._repair = repair
        self._timeout = connect_timeout
        self._conn: SandboxConnection | None = None
        self._xid = 0
        self._sequences = ""  # puts back the sequences that moved (not transactional)
        self._sequences_any = ""  # the same, from another session

    @property
    def connection(self) -> SandboxConnection | None:
        """The connection the tests use, while it is open."""
        return self._conn

    def _connect(self) -> SandboxConnection:
        conn = SandboxConnection.connect(
            self.info.conninfo(),
            connect_timeout=max(1, round(self._timeout)),
            application_name=f"{APPLICATION_NAME} test",  # not one of pgsandbox's own
        )
        self._sequences, self._sequences_any = sequence_reset(conn)
        conn.commit()
        return conn

    def begin(self) -> SandboxConnection:
        """Start the test's outer transaction and return its connection."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = self._conn = self._connect()
        elif conn.info.transaction_status != TransactionStatus.IDLE:
            conn.rollback()
        conn._pgsb_active = False
        conn._pgsb_broken = False
        # One round trip (psycopg would send its own BEGIN first, costing another).
        start = f"BEGIN; {self._set_role}SAVEPOINT {SAVEPOINT}; SELECT txid_current()"
        try:
            xid = _batch(conn, start)
        except psycopg.OperationalError:
            # Ended by the server while idle between tests (a rebuild in place ends this
            # role's sessions): a new connection, once.
            conn.close()
            conn = self._conn = self._connect()
            xid = _batch(conn, start)
        self._xid = int(xid or 0)
        conn._pgsb_active = True
        return conn

    def end(self) -> str | None:
        """Roll the test back. Returns how isolation was broken, or None if it held."""
        conn = self._conn
        if conn is None:
            return None
        conn._pgsb_active = False
        if conn.closed or conn.broken:
            # The server rolls back what a closed connection had not committed.
            self._conn = None
            state = self._xact_status_elsewhere()
        else:
            # Roll back (whatever transaction is open), drop session advisory locks, and ask
            # how the test's outer transaction ended, all in one round trip.
            rollback = (
                "" if conn.info.transaction_status == TransactionStatus.IDLE else "ROLLBACK; "
            )
            rest = f"SELECT pg_advisory_unlock_all(); {DEALLOCATE_SQL}; {self._sequences}"
            status = f"SELECT txid_status({self._xid:d})"
            try:
                state = _batch(conn, f"{rollback}{rest}{status}")
            except errors.UndefinedFunction:
                # The test ran DISCARD ALL (or TEMP): the session's function went with it
                # (and so did what nextval() had done, which lastval() would have told).
                install_guard(conn, self._sequences_any)
                conn.commit()
                state = _batch(conn, f"{rest}{status}")
        if state != "committed":
            return None
        self.close()
        self._repair()
        return "committed"

    def committed(self) -> bool:
        """Whether the test's outer transaction was ended by a COMMIT sent as SQL (now, in
        the middle of the test; ``end()`` says it afterwards)."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            return self._xact_status_elsewhere() == "committed"
        return _batch(conn, f"SELECT txid_status({self._xid:d})") == "committed"

    def _xact_status_elsewhere(self) -> str | None:
        with connect(self.info, timeout=self._timeout) as conn:
            if self._sequences_any:
                conn.execute(self._sequences_any)
            return _first(conn.execute("SELECT txid_status(%s)", (self._xid,)))

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None


# Every sequence, where it is now, and where it starts.
SEQUENCES = (
    "SELECT c.oid, pg_sequence_last_value(c.oid), s.seqstart "
    "FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'S' AND n.nspname NOT LIKE 'pg\\_temp%'"
)


def values_of(rows: Iterable[Sequence[Any]]) -> str:
    """Rows of ``SEQUENCES`` (from any driver) as SQL ``VALUES`` rows (seq, last, start);
    "" if none. Built from numbers only (formatted as int), so safe to send as text."""
    return ", ".join(
        f"({int(oid):d}::oid, {'NULL' if last is None else int(last)}::bigint, {int(start):d})"
        for oid, last, start in rows
    )


def restore_sql(values: str) -> str:
    """SQL that puts back every sequence that moved from ``values`` ("" if none)."""
    if not values:
        return ""
    return (  # numbers only (see values_of): no injection possible
        "SELECT setval(v.seq::regclass, coalesce(v.last, v.start), v.last IS NOT NULL) "  # noqa: S608
        f"FROM (VALUES {values}) v(seq, last, start) "
        "WHERE pg_sequence_last_value(v.seq::regclass) IS DISTINCT FROM v.last"
    )


def sequence_values(conn: psycopg.Connection[Any]) -> str:
    """Every sequence and where it is now, as SQL ``VALUES`` rows (see ``values_of``)."""
    return values_of(conn.execute(SEQUENCES).fetchall())


def sequence_reset(conn: psycopg.Connection[Any]) -> tuple[str, str]:
    """SQL that puts every sequence back where it is now, if it moved ("" if none).

    Two forms: for the same session (checks only if it called ``nextval()``), and for any.

    Rolling back does not undo ``nextval()``; without this, ids would depend on which tests
    ran before. Only ``nextval()`` calls of the test's own connection are seen (others cannot
    write to its database unseen anyway: their rows would outlive the test, which the
    verifier reports).
    """
    reset = restore_sql(sequence_values(conn))
    if not reset:
        return "", ""
    # Checking 30 sequences costs ~0.3 ms, so only when this session called nextval() since
    # the last check: lastval() fails otherwise. In a temporary function of the session (gone
    # with it, outside the user's schemas), compiled and planned once: an anonymous block
    # with EXECUTE was both, every test (0.1 ms more).
    install_guard(conn, reset)
    return "SELECT pg_temp.pgsandbox_sequences(); DISCARD SEQUENCES; ", reset


def install_guard(conn: psycopg.Connection[Any], reset: str) -> None:
    """Create the session's function that runs ``reset`` if nextval() was called."""
    conn.execute(guard_sql(reset))


def guard_sql(reset: str) -> str:
    """``CREATE FUNCTION pg_temp.pgsandbox_sequences()``: runs ``reset`` (``restore_sql``)
    if this session called nextval()."""
    return _GUARD.replace("{restore}", "PERFORM " + reset.removeprefix("SELECT "))


def guard_block(reset: str) -> str:
    """A ``DO`` block that runs ``reset`` if this session called nextval(): for a session
    too short to be worth a function of its own."""
    body = "PERFORM " + reset.removeprefix("SELECT ")
    return (
        f"DO $pgsb$ BEGIN PERFORM lastval(); {body}; "
        "EXCEPTION WHEN object_not_in_prerequisite_state THEN NULL; END $pgsb$"
    )


_GUARD = """
CREATE OR REPLACE FUNCTION pg_temp.pgsandbox_sequences() RETURNS void
LANGUAGE plpgsql AS $pgsb$
BEGIN
    PERFORM lastval();
    {restore};
EXCEPTION WHEN object_not_in_prerequisite_state THEN NULL;
END $pgsb$
"""


def row_of(conn: psycopg.Connection[Any], statements: str) -> tuple[str | None, ...]:
    """Run ``statements`` in one round trip; the first row of the last result, as text.

    Only for our own fixed statements: they go to libpq as they are.
    """
    with conn.lock:
        result = conn.pgconn.exec_(statements.encode())
    if result.status not in (ExecStatus.COMMAND_OK, ExecStatus.TUPLES_OK):
        if conn.pgconn.status != ConnStatus.OK:
            raise psycopg.OperationalError(
                conn.pgconn.error_message.decode(errors="replace").strip()
                or "the connection to the server was lost"
            )
        raise errors.error_from_result(result, encoding=conn.info.encoding)
    if result.ntuples == 0:
        return ()
    values = (result.get_value(0, i) for i in range(result.nfields))
    return tuple(None if v is None else v.decode() for v in values)


def _batch(conn: psycopg.Connection[Any], statements: str) -> str | None:
    """``row_of``'s first value (None when there is no row)."""
    row = row_of(conn, statements)
    return row[0] if row else None


def _first(cur: psycopg.Cursor[Any]) -> str | None:
    row = cur.fetchone()
    return None if row is None else str(row[0])


# Statements a test prepared with SQL's PREPARE outlive its transaction: deallocated, so the
# next test on the session may PREPARE the same name. Not psycopg's own (protocol-level,
# ``from_sql`` false): its cache of them stays true.
DEALLOCATE_SQL = (
    "DO $pgsb$ DECLARE s record; BEGIN FOR s IN SELECT name FROM pg_prepared_statements "
    "WHERE from_sql LOOP EXECUTE 'DEALLOCATE ' || quote_ident(s.name); END LOOP; END $pgsb$"
)

# What a session that reset or clone hands to the next test must not carry over (after a
# ``ROLLBACK``, when a transaction is open): settings, the role, advisory locks, LISTEN, open
# cursors, statements prepared with SQL, and currval()'s memory. Temporary objects are
# catalog writes: they make the database be replaced instead.
SESSION_RESET = (
    "RESET ALL; RESET SESSION AUTHORIZATION; RESET ROLE; CLOSE ALL; UNLISTEN *; "
    f"DISCARD SEQUENCES; {DEALLOCATE_SQL}; SELECT pg_advisory_unlock_all()"
)


def as_new(conn: psycopg.Connection[Any]) -> bool:
    """Give ``conn`` the client-side settings of a new connection (outside a transaction);
    False if it cannot be handed on (closed, broken, or in a transaction)."""
    if conn.closed or conn.broken:
        return False
    if conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    try:
        conn.autocommit = False
        conn.isolation_level = None
        conn.read_only = None
        conn.deferrable = None
    except psycopg.Error:
        return False
    conn.row_factory = tuple_row
    conn.prepare_threshold = 5  # psycopg's default
    return True
