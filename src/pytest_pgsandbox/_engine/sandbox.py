"""One test session's PostgreSQL: the server, the session database, its isolation.

The plugin and the command line both drive this; it knows nothing of pytest.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from pytest_pgsandbox._engine.base import PgServer
from pytest_pgsandbox._engine.naming import database_name
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.settings import Settings

if TYPE_CHECKING:  # these import psycopg: only once a database is needed
    import psycopg
    from psycopg.rows import TupleRow

    from pytest_pgsandbox._engine.isolation import TransactionIsolation


class Sandbox:
    """Starts the server on first use, provides the session database, cleans up."""

    def __init__(self, settings: Settings, run_id: str, worker: str = "main") -> None:
        self.settings = settings
        self.run_id = run_id
        self.worker = worker
        self.server: PgServer | None = None
        self.error: PgSandboxError | None = None
        self.dbname = ""
        self._created_db = False
        self._isolation: TransactionIsolation | None = None
        self.startup_seconds = 0.0

    def ensure_server(self) -> PgServer:
        """The running server; a start failure is remembered and raised again at once."""
        if self.server is not None:
            return self.server
        if self.error is not None:
            raise self.error
        from pytest_pgsandbox._engine.server import open_server

        began = time.monotonic()
        try:
            server = open_server(self.settings)
        except PgSandboxError as exc:
            self.error = exc
            raise
        try:
            self._prepare_session_db(server)
        except PgSandboxError as exc:
            self.error = exc
            server.stop()
            raise
        self.server = server
        self.startup_seconds = time.monotonic() - began
        return server

    def _admin(self, server: PgServer) -> psycopg.Connection[TupleRow]:
        return connect(server.admin, timeout=self.settings.start_timeout)

    def _prepare_session_db(self, server: PgServer) -> None:
        from pytest_pgsandbox._engine import provision
        from pytest_pgsandbox._engine.cluster import SESSION_DB

        if server.owns_cluster:
            self.dbname = SESSION_DB  # created once in the cached cluster
            return
        self.dbname = database_name("session", self.run_id, self.worker)
        with self._admin(server) as conn:
            provision.create_database(
                conn, self.dbname, {"kind": "session", "run": self.run_id, "worker": self.worker}
            )
        self._created_db = True

    @property
    def db_info(self) -> ConnInfo:
        server = self.ensure_server()
        return server.admin.for_db(self.dbname)

    def isolation(self) -> TransactionIsolation:
        from pytest_pgsandbox._engine.isolation import TransactionIsolation

        if self._isolation is None:
            self._isolation = TransactionIsolation(
                self.db_info, self.repair, self.settings.start_timeout
            )
        return self._isolation

    def repair(self) -> None:
        """Replace the session database with a fresh one (after a test committed for real)."""
        from pytest_pgsandbox._engine import provision

        server = self.ensure_server()
        with self._admin(server) as conn:
            provision.drop_database(conn, self.dbname)
            provision.create_database(
                conn, self.dbname, {"kind": "session", "run": self.run_id, "worker": self.worker}
            )

    def close(self) -> None:
        """Drop what this session created and stop a server it started."""
        if self._isolation is not None:
            import psycopg

            # The server may be gone already: then there is nothing left to roll back.
            with contextlib.suppress(psycopg.Error):
                self._isolation.close()
            self._isolation = None
        server, self.server = self.server, None
        if server is None:
            return
        try:
            if self._created_db:
                from pytest_pgsandbox._engine import provision

                with self._admin(server) as conn:
                    provision.drop_database(conn, self.dbname)
        finally:
            server.stop()
