"""Reset isolation for a Django project's test databases, in place of Django's flush.

Django's ``TransactionTestCase`` empties every table after each test (``flush``), which costs
time in proportion to the schema's width and loses the rows data migrations wrote. Here each
alias's test database is instead a copy of an *instrumented* template (the migrated template
plus the bookkeeping of :mod:`.reset`, built once per fingerprint), so after a test only the
tables it wrote to are put back, data migrations' rows and sequences included, whichever
connection (a live server's thread too) committed them.

What the project's own ``django_db_setup`` adds after Django created the test database (the
"initial test data" recipe) belongs to the starting point too: if anything was written by the
time the first test runs, the bookkeeping is taken again from the database as it is then, and
a copy of it is kept for the rare test that runs DDL (which swaps in a fresh copy).

Django is not imported here: the pytest layer closes Django's connections when asked.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from pytest_pgsandbox._engine.isolation.reset import SCHEMA
from pytest_pgsandbox._engine.isolation.reset import instrument
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.templates.template import PgTemplate
from pytest_pgsandbox._engine.templates.template import ensure_built
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox._version import __version__
from pytest_pgsandbox.errors import ServerError

WAIT_MS = 5000  # how long a session with work in flight gets to end before the restore


def ensure_template(
    admin: ConnInfo, template: PgTemplate, alias: str, run_id: str, timeout: float
) -> PgTemplate:
    """The instrumented copy of an alias's migrated ``template``: found, or made now (once,
    under the template lock; kept on the server like the template itself)."""
    digest = hashlib.sha256(
        f"django reset\n{template.fingerprint}\npgsandbox {__version__}\n".encode()
    ).hexdigest()

    def fill(info: ConnInfo) -> None:
        with connect(info, autocommit=False, timeout=timeout) as conn:
            instrument(conn)

    return ensure_built(
        admin, digest, fill, run_id, timeout, source=template.name, family=f"django-reset:{alias}"
    )


def _strip(conn: psycopg.Connection[Any]) -> None:
    """Remove the bookkeeping (its triggers go with its functions)."""
    conn.execute("DROP EVENT TRIGGER IF EXISTS _pgsandbox_ddl")
    conn.execute("DROP EVENT TRIGGER IF EXISTS _pgsandbox_drop")
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SCHEMA)))


def is_clean(admin: ConnInfo, name: str, timeout: float) -> bool:
    """Whether database ``name`` carries the bookkeeping and nothing was written since it was
    taken (a database kept by ``--reuse-db`` after an interrupted test is not)."""
    with connect(admin.for_db(name), timeout=timeout) as conn:
        if not _instrumented(conn):
            return False
        row = conn.execute("SELECT EXISTS (SELECT FROM _pgsandbox.touched)").fetchone()
        return not (row and row[0])


def _instrumented(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regprocedure('_pgsandbox.reset(integer)') IS NOT NULL")
    return bool((row.fetchone() or (False,))[0])


# Whether anything needs putting back (the reset's own checks, less its sessions' scan).
_WRITTEN = """
SELECT EXISTS (SELECT FROM _pgsandbox.touched)
    OR EXISTS (SELECT FROM _pgsandbox.sequences s
               WHERE pg_sequence_last_value(s.seq) IS DISTINCT FROM s.last_value)
"""


class DjangoReset:
    """One alias's test database, put back after each test that opts in."""

    def __init__(
        self,
        admin: ConnInfo,
        name: str,
        source: str,
        label: dict[str, object],
        timeout: float,
        close_clients: Callable[[], None],
    ) -> None:
        """``source``: the instrumented template the database was copied from;
        ``close_clients``: closes the project's own connections (before a swap)."""
        self.admin = admin
        self.name = name
        self.source = source
        self.label = label
        self.timeout = timeout
        self.close_clients = close_clients
        self.snapshot: str | None = None  # our copy of the starting point, when it is not source
        self.conn: psycopg.Connection[Any] | None = None
        self.resets = 0
        self.swaps = 0

    def prepare(self, snapshot_name: str) -> str | None:
        """Make the database's current contents the starting point of every test. Returns
        None when it was not copied from an instrumented template (then the caller keeps
        Django's flush), else how it was made ready: "as copied" or "taken again"."""
        self._disconnect()
        with connect(self.admin, timeout=self.timeout) as admin:
            # CREATE DATABASE does not copy ALTER DATABASE ... SET, which the template's
            # bookkeeping compares with: Django's copy gets the template's now.
            provision.copy_settings(admin, self.source, self.name)
        with connect(self.admin.for_db(self.name), timeout=self.timeout) as conn:
            if not _instrumented(conn):
                return None
            row = conn.execute("SELECT EXISTS (SELECT FROM _pgsandbox.touched)").fetchone()
            written = bool(row and row[0])
            if written:  # by the project's django_db_setup: take the bookkeeping again
                with conn.transaction():
                    _strip(conn)
                    instrument(conn)
        with connect(self.admin, timeout=self.timeout) as admin:
            if provision.database_label(admin, self.name) is None:
                # Django made it; labelled now so that a swap may drop it.
                provision.relabel(admin, self.name, self.label)
            else:
                self.label = provision.database_label(admin, self.name) or self.label
            if written:
                self.close_clients()
                provision.end_sessions(admin, self.name, tests_only=True)
                provision.drop_database(admin, snapshot_name)
                provision.create_database(
                    admin, snapshot_name, {**self.label, "kind": "django-snapshot"}, self.name
                )
                self.snapshot = snapshot_name
        return "taken again" if written else "as copied"

    def _connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = connect(self.admin.for_db(self.name), timeout=self.timeout)
        return self.conn

    def reset(self, if_written: bool = False) -> str:
        """Put back what was written since the last reset: "reset", or "swapped" after DDL.

        ``if_written``: first ask, in one cheap query, whether any table was written or any
        sequence moved (a rolled-back test's ``nextval`` stays); "clean" if not.
        """
        if if_written:
            try:
                row = self._connection().execute(_WRITTEN).fetchone()
            except psycopg.Error:
                row = (True,)  # the reset says what is wrong
            if not (row and row[0]):
                return "clean"
        try:
            row = self._connection().execute(f"SELECT {SCHEMA}.reset({WAIT_MS:d})").fetchone()
        except psycopg.Error as exc:
            self.swap()
            raise ServerError(
                f"could not restore the tables the test wrote to in {self.name!r} "
                f"({str(exc).strip()}); the database was replaced by a fresh copy."
            ) from None
        self.resets += 1
        if row is None or row[0] != "ddl":
            return "reset"
        self.swap()
        return "swapped"

    def swap(self) -> None:
        """Replace the database by a fresh copy of its starting point, under the same name."""
        self._disconnect()
        self.close_clients()
        with connect(self.admin, timeout=self.timeout) as admin:
            provision.drop_database(admin, self.name)
            provision.create_database(admin, self.name, self.label, self.snapshot or self.source)
        self.swaps += 1

    def _disconnect(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None

    def close(self) -> None:
        """Before Django drops the database: our connection and snapshot go."""
        self._disconnect()
        if self.snapshot is not None:
            with connect(self.admin, timeout=self.timeout) as admin:
                provision.drop_database(admin, self.snapshot)
            self.snapshot = None
