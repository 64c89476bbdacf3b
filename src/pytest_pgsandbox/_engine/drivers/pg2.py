"""psycopg2 for ``pg_engine``/``pg_session``, for code written against it (``driver=psycopg2``).

Under transaction isolation the test's psycopg2 connection runs in an outer transaction of
its own: ``commit()`` releases and re-creates a savepoint, ``rollback()`` rolls back to it,
and at the end everything is rolled back and moved sequences are put back. Under clone and
reset isolation it is a plain connection that commits for real.
"""

from __future__ import annotations

import importlib
from typing import Any

from pytest_pgsandbox._engine.isolation.transaction import SAVEPOINT
from pytest_pgsandbox._engine.isolation.transaction import SEQUENCES
from pytest_pgsandbox._engine.isolation.transaction import restore_sql
from pytest_pgsandbox._engine.isolation.transaction import values_of
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox.errors import PgSandboxError


def require_psycopg2() -> Any:
    try:
        psycopg2 = importlib.import_module("psycopg2")
        importlib.import_module("psycopg2.extensions")
    except ImportError:
        raise PgSandboxError(
            "driver=psycopg2 needs psycopg2: pip install 'pytest-pgsandbox[psycopg2]'"
        ) from None
    return psycopg2


_CLASSES: dict[str, type[Any]] = {}


def _sandbox_class() -> type[Any]:
    """psycopg2's connection class with commit and rollback kept inside the test."""
    found = _CLASSES.get("sandbox")
    if found is not None:
        return found
    psycopg2 = require_psycopg2()
    base = psycopg2.extensions.connection
    idle = psycopg2.extensions.TRANSACTION_STATUS_IDLE
    in_error = psycopg2.extensions.TRANSACTION_STATUS_INERROR

    class SandboxConnection2(base):  # type: ignore[misc, valid-type]
        _pgsb_active = False

        def commit(self) -> None:
            if not self._pgsb_active:
                return base.commit(self)  # type: ignore[no-any-return]
            status = self.info.transaction_status
            if status == in_error:
                self._pgsb_run(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
            elif status != idle:
                self._pgsb_run(f"RELEASE SAVEPOINT {SAVEPOINT}; SAVEPOINT {SAVEPOINT}")
            return None

        def rollback(self) -> None:
            if not self._pgsb_active:
                return base.rollback(self)  # type: ignore[no-any-return]
            if self.info.transaction_status != idle:
                self._pgsb_run(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
            return None

        def _pgsb_run(self, statement: str) -> None:
            with self.cursor() as cur:
                cur.execute(statement)

    _CLASSES["sandbox"] = SandboxConnection2
    return SandboxConnection2


class Psycopg2Connection:
    """The test's psycopg2 connection (``isolated``: in an outer transaction)."""

    def __init__(
        self, info: ConnInfo, isolated: bool, timeout: float = 60.0, set_role: str = ""
    ) -> None:
        psycopg2 = require_psycopg2()
        factory = _sandbox_class() if isolated else psycopg2.extensions.connection
        self.conn: Any = psycopg2.connect(
            info.conninfo(), connect_timeout=max(1, round(timeout)), connection_factory=factory
        )
        self._restore = ""
        if isolated:
            with self.conn.cursor() as cur:
                cur.execute(SEQUENCES)
                self._restore = restore_sql(values_of(cur.fetchall()))
            self.conn.rollback()
            with self.conn.cursor() as cur:
                # Opens the outer transaction too (acting as the role, if any).
                cur.execute(f"{set_role}SAVEPOINT {SAVEPOINT}")
            self.conn._pgsb_active = True

    def close(self) -> None:
        conn = self.conn
        if conn.closed:
            return
        try:
            if getattr(conn, "_pgsb_active", False):
                conn._pgsb_active = False
                conn.rollback()
                if self._restore:
                    with conn.cursor() as cur:
                        cur.execute(self._restore)
                    conn.commit()
        finally:
            conn.close()


class HelperConnection:
    """A psycopg2 connection as the database helpers use a psycopg 3 one: ``execute`` (with
    psycopg 3's ``sql`` objects), ``cursor().copy()``, ``transaction()``, ``commit``/``rollback``.

    So that under ``driver=psycopg2`` the helpers run on the test's psycopg2 connection, in
    its transaction. psycopg2's errors come out as psycopg 3's class for the same SQLSTATE.
    """

    def __init__(self, conn: Any) -> None:
        self.raw = conn
        self.closed = False

    def execute(self, query: Any, params: Any = None) -> _Cursor:
        cur = _Cursor(self.raw.cursor())
        cur.execute(query, params)
        return cur

    def cursor(self) -> _Cursor:
        return _Cursor(self.raw.cursor())

    def commit(self) -> None:
        self.raw.commit()

    def rollback(self) -> None:
        self.raw.rollback()

    def transaction(self) -> _Savepoint:
        return _Savepoint(self)


def _text(query: Any) -> str:
    if isinstance(query, bytes):
        return query.decode()
    if isinstance(query, str):
        return query
    return str(query.as_string(None))  # psycopg 3's sql objects


def as_psycopg_error(exc: Exception) -> Exception:
    """psycopg 3's exception for psycopg2's ``exc`` (the class of its SQLSTATE)."""
    import psycopg

    code = getattr(exc, "pgcode", None)
    try:
        cls: type[Exception] = psycopg.errors.lookup(code) if code else psycopg.DatabaseError
    except KeyError:
        cls = psycopg.DatabaseError
    return cls(str(getattr(exc, "pgerror", None) or exc).strip())


class _Cursor:
    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, query: Any, params: Any = None) -> _Cursor:
        psycopg2 = require_psycopg2()
        try:
            if params is None:
                self._cur.execute(_text(query))
            else:
                self._cur.execute(_text(query), params)
        except psycopg2.Error as exc:
            raise as_psycopg_error(exc) from None
        return self

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> Any:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def copy(self, query: Any) -> _Copy:
        return _Copy(self, _text(query))


class _Copy:
    """``COPY ... FROM STDIN``: what is written, sent with psycopg2's ``copy_expert``."""

    def __init__(self, cursor: _Cursor, query: str) -> None:
        import io

        self._cursor = cursor
        self._query = query
        self._data = io.StringIO()

    def write(self, chunk: str) -> None:
        self._data.write(chunk)

    def __enter__(self) -> _Copy:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            return
        psycopg2 = require_psycopg2()
        self._data.seek(0)
        try:
            self._cursor._cur.copy_expert(self._query, self._data)
        except psycopg2.Error as error:
            raise as_psycopg_error(error) from None


class _Savepoint:
    """``with conn.transaction():`` as psycopg 3 does inside a transaction: a savepoint."""

    NAME = "pgsandbox_helper"

    def __init__(self, conn: HelperConnection) -> None:
        self._conn = conn

    def __enter__(self) -> _Savepoint:
        self._conn.execute(f"SAVEPOINT {self.NAME}")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self._conn.execute(f"RELEASE SAVEPOINT {self.NAME}")
        else:
            self._conn.execute(f"ROLLBACK TO SAVEPOINT {self.NAME}")
