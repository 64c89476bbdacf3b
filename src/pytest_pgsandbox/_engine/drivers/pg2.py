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
