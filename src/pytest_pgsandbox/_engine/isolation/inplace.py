"""Servers where the tests' role may not create databases: the URL's own database, in place.

Managed and shared servers often give a team one database and a role without ``CREATEDB``.
There is then no template database to copy; instead the schema is built once into the URL's
database itself, with reset isolation's bookkeeping (``_pgsandbox``), and every test starts
from it:

- ``transaction`` isolation rolls each test back, as anywhere;
- ``reset`` isolation puts back what a test wrote (see ``reset``), so any connection may
  commit;
- a schema that changed (its hash is kept in ``_pgsandbox.in_place``), DDL in a test, or a
  restore that cannot be done rebuilds the database in place: everything the role owns in it
  is dropped (``DROP OWNED``) and the schema built again.

The database must belong to the role and hold no tables when it is first used; from then on
``_pgsandbox.in_place`` marks it as pgsandbox's. It is never dropped. One run at a time may use
it: a session-long advisory lock keeps a second one out with a message, rather than letting two
runs undo each other's rows.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from pytest_pgsandbox._engine.isolation import reset
from pytest_pgsandbox._engine.isolation.verify import catalog_digest
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers.provision import IN_PLACE_MARK as MARK
from pytest_pgsandbox._engine.servers.provision import is_in_place
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox.errors import ServerError

_LOCK = 0x70677362_696E706C  # "pgsbinpl": one run at a time in the database


class InPlace:
    """The URL's database, used in place for a whole session."""

    def __init__(
        self,
        info: ConnInfo,
        digest: str,
        fill: Callable[[ConnInfo], None],
        run_id: str,
        timeout: float,
    ) -> None:
        self.info = info
        self.digest = digest
        self._fill = fill
        self.run_id = run_id
        self.timeout = timeout
        self.reused = False
        self.rebuilds = 0
        self.build_seconds = 0.0
        self.baseline = ""  # its catalog digest as built (what is_dirty() compares with)
        self._lock: psycopg.Connection[Any] | None = None

    def open(self) -> None:
        """Take the database for this run, and make it match the schema."""
        lock = connect(self.info, timeout=self.timeout)
        try:
            self._check_owner(lock)
            got = lock.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK,)).fetchone()
            if not (got and got[0]):
                raise ServerError(
                    f"another test run is using the database {self.info.dbname!r} in place "
                    f"({self._where()}), and one run at a time may. The role "
                    f"{self.info.user!r} may not create databases, so runs cannot get one "
                    "each: wait for the other run, or grant the role CREATEDB "
                    f"(ALTER ROLE {self.info.user} CREATEDB). Under pytest-xdist, workers "
                    "are runs of their own: drop -n, or grant CREATEDB."
                )
            found = lock.execute(
                sql.SQL("SELECT hash FROM {}").format(sql.SQL(MARK))
                if is_in_place(lock)
                else "SELECT NULL WHERE false"
            ).fetchone()
        except BaseException:
            lock.close()
            raise
        self._lock = lock
        try:
            if found is not None and found[0] == self.digest:
                self.reused = True
                self.restore()  # whatever a run that was killed left behind
            else:
                self.rebuild(clear=found is not None)
            self.baseline = catalog_digest(lock)
        except BaseException:
            self.close()
            raise

    def _where(self) -> str:
        return mask(self.info.url())

    def _check_owner(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(
            "SELECT pg_get_userbyid(datdba), pg_has_role(datdba, 'USAGE') FROM pg_database "
            "WHERE datname = current_database()"
        ).fetchone()
        if row is None or not row[1]:
            owner = row[0] if row else "?"
            raise ServerError(
                f"the role {self.info.user!r} may not create databases on this server, so "
                f"pgsandbox would run the tests in the URL's database {self.info.dbname!r} "
                f"itself, but that belongs to {owner!r}. Use a database the role owns, made "
                "for the tests (as an administrator: CREATE DATABASE app_test OWNER "
                f"{self.info.user}), or grant the role CREATEDB."
            )

    def rebuild(self, clear: bool = True) -> None:
        """Build the schema into the database again (after clearing what the role made).

        The mark comes first, saying "building": a build that fails half way leaves a
        database that is still known to be pgsandbox's, and is cleared next time.
        """
        try:
            self._rebuild(clear)
        except psycopg.Error as exc:
            raise ServerError(
                f"could not build the schema into the database {self.info.dbname!r} in place "
                f"(the role {self.info.user!r} may not create databases, so the tests run "
                f"there): {str(exc).strip()}"
            ) from None

    def _rebuild(self, clear: bool) -> None:
        began = time.monotonic()
        mark = sql.SQL(MARK)
        with connect(self.info, timeout=self.timeout) as conn:
            if clear:
                provision.end_sessions(conn, self.info.dbname, tests_only=True)
                conn.execute("DROP OWNED BY CURRENT_USER")
            with conn.transaction():
                conn.execute("CREATE SCHEMA IF NOT EXISTS _pgsandbox")
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (hash text, run text, built float)"
                    ).format(mark)
                )
                conn.execute(sql.SQL("DELETE FROM {}").format(mark))
                conn.execute(
                    sql.SQL("INSERT INTO {} VALUES ('building', %s, NULL)").format(mark),
                    (self.run_id,),
                )
        self._fill(self.info)
        with connect(self.info, timeout=self.timeout, autocommit=False) as conn:
            reset.instrument(conn)
            conn.execute(
                sql.SQL("UPDATE {} SET hash = %s, built = %s").format(mark),
                (self.digest, time.time()),
            )
            conn.commit()
        self.rebuilds += 1
        self.build_seconds += time.monotonic() - began

    def restore(self) -> None:
        """Put the database back as built (rebuilding it where that cannot be done)."""
        try:
            with connect(self.info, timeout=self.timeout) as conn:
                row = conn.execute(
                    "SELECT _pgsandbox.reset(%s)", (ResetInPlace.WAIT_MS,)
                ).fetchone()
            done = row is not None and row[0] != "ddl"
        except psycopg.Error:  # the bookkeeping itself was damaged: build it all again
            done = False
        if not done:
            self.rebuild()

    def close(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(psycopg.Error):
                self._lock.close()
            self._lock = None


class ResetInPlace(reset.ResetDatabase):
    """Reset isolation in the database the URL names: a swap rebuilds it in place."""

    def __init__(self, place: InPlace) -> None:
        self.place = place
        super().__init__(place.info, None, place.info.dbname, place.timeout)  # nothing copied

    def swap(self, keep_as: str | None = None) -> None:
        if keep_as is not None:
            self.end()  # the next test needs the database as built
            raise ServerError(
                f"cannot keep the test's database: the role {self.info.user!r} may not create "
                "databases, so the tests run in one database in place and the next test needs "
                "it. Its rows are put back now."
            )
        self._disconnect()
        self.place.rebuild()
        self.swaps += 1

    def close(self, drop: bool = True) -> None:
        """Close the connection; the database stays (it is the URL's, not ours to drop)."""
        del drop
        self._disconnect()
