"""Clone isolation: every test gets a database of its own, copied from the template.

``CREATE DATABASE ... TEMPLATE`` costs tens of milliseconds even in RAM, so a background
thread keeps a few copies ready and drops used ones; a test waits only when it outruns the
thread. Any code may use the copy through its URL, on any number of connections, and commit.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pytest_pgsandbox._engine.isolation.transaction import _batch
from pytest_pgsandbox._engine.isolation.transaction import sequence_values
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.errors import ServerError


class ClonePool:
    """Copies of one template, made ahead of time by a background thread."""

    def __init__(
        self,
        admin: ConnInfo,
        template: str,
        name_for: Callable[[int], str],
        label: dict[str, object],
        size: int = 2,
        timeout: float = 60.0,
        strategy: str | None = None,
        only_role: str | None = None,
    ) -> None:
        self.admin = admin
        self.only_role = only_role
        self.template = template
        self._name_for = name_for
        self._label = label
        self.size = max(1, size)
        self.timeout = timeout
        self.strategy = strategy
        self._ready: deque[str] = deque()
        self._to_drop: deque[str] = deque()
        self._made = 0
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closing = False
        self._threads: list[threading.Thread] = []
        self.reused = 0
        # Where the template's sequences are: "unchanged" includes them. Read from the
        # template before the first copy is made.
        self.sequences: str | None = None

    def take(self) -> ConnInfo:
        """A fresh copy of the template; waits for one (up to the timeout) if none is ready."""
        deadline = time.monotonic() + self.timeout
        with self._cond:
            self._start()
            while not self._ready:
                if self._error is not None:
                    raise ServerError(
                        f"could not copy template {self.template!r} for a test: {self._error}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerError(
                        f"no copy of template {self.template!r} was ready after "
                        f"{self.timeout:.0f} s. Raise --pg-start-timeout if the server is "
                        "very slow."
                    )
                self._cond.wait(left)
            name = self._ready.popleft()
            self._cond.notify_all()  # room for the next copy
        return self.admin.for_db(name)

    def give_back(self, name: str, unchanged: bool = False) -> None:
        """The test is done with ``name``: drop it in the background.

        ``unchanged``: nothing was written to it, so the next test may have it as it is.
        """
        with self._cond:
            if unchanged and not self._closing:
                self._ready.appendleft(name)
                self.reused += 1
            else:
                self._to_drop.append(name)
            self._cond.notify_all()

    def _start(self) -> None:
        # Two workers, each on a connection of its own: copies are made while used ones are
        # dropped, so a test rarely waits for either.
        if not self._threads:
            for job in ("create", "drop"):
                thread = threading.Thread(
                    target=self._work, args=(job,), name=f"pgsandbox-clone-{job}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _next(self, job: str) -> str | None:
        with self._cond:
            while True:
                if self._closing:
                    return None
                if job == "create" and len(self._ready) < self.size:
                    self._made += 1
                    return self._name_for(self._made)
                if job == "drop" and self._to_drop:
                    return self._to_drop.popleft()
                self._cond.wait()

    def _work(self, job: str) -> None:
        try:
            with connect(self.admin, timeout=self.timeout) as conn:
                if job == "create":
                    # One connection to the template first: where its sequences are (what
                    # "unchanged" compares with), and its relation cache file is then copied
                    # with it, so the first connection to each copy starts faster (a server
                    # removes those files when it starts). A template that takes no
                    # connections leaves sequences unknown: then no copy is handed on.
                    with (
                        contextlib.suppress(psycopg.Error),
                        connect(self.admin.for_db(self.template), timeout=self.timeout) as t,
                    ):
                        self.sequences = sequence_values(t)
                while (name := self._next(job)) is not None:
                    if job == "drop":
                        provision.drop_database(conn, name)
                        continue
                    provision.create_database(
                        conn, name, self._label, self.template, self.strategy, self.only_role
                    )
                    with self._cond:
                        self._ready.append(name)
                        self._cond.notify_all()
        except (psycopg.Error, PgSandboxError) as exc:
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def close(self, drop: bool = True) -> None:
        """Stop the thread; drop every copy still around unless the server is going away."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(self.timeout)
        if not drop:
            return
        leftovers = list(self._ready) + list(self._to_drop)
        if not leftovers:
            return
        with contextlib.suppress(psycopg.Error), connect(self.admin, timeout=self.timeout) as c:
            for name in leftovers:
                provision.drop_database(c, name)
        self._ready.clear()
        self._to_drop.clear()


# True only if nothing can have changed the copy: no other session on it (one that has ended
# flushed its statistics before it left pg_stat_activity), no row written by any session
# (counted in every table, catalogs included: DDL and TRUNCATE write catalog rows), no
# database setting. (Sequences where the template has them are checked first.)
_UNCHANGED = """
SELECT current_setting('track_counts')::bool
   AND NOT EXISTS (SELECT FROM pg_stat_get_activity(NULL) a
                   WHERE a.datid = d.datid AND a.pid <> pg_backend_pid())
   AND d.tup_inserted + d.tup_updated + d.tup_deleted = 0
   AND NOT EXISTS (SELECT FROM pg_db_role_setting s WHERE s.setdatabase = d.datid
                   AND s.setrole <> 0)
   AND (SELECT s.setconfig FROM pg_db_role_setting s
        WHERE s.setdatabase = d.datid AND s.setrole = 0)
       IS NOT DISTINCT FROM
       (SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database t ON t.oid = s.setdatabase
        WHERE t.datname = {source} AND s.setrole = 0)
FROM pg_stat_database d WHERE d.datname = current_database()
"""


class CloneDatabase:
    """The test's own copy and the connection ``pg`` gives it."""

    def __init__(self, pool: ClonePool, timeout: float) -> None:
        self.pool = pool
        self.info = pool.take()
        self.conn: psycopg.Connection[Any] = psycopg.connect(
            self.info.conninfo(), connect_timeout=max(1, round(timeout))
        )

    def unchanged(self) -> bool:
        """Whether the test changed nothing in its copy (False when that cannot be known).

        PostgreSQL 15+ only: before, statistics reached the server late (by UDP).
        """
        conn, sequences = self.conn, self.pool.sequences
        if conn.closed or conn.broken or sequences is None or conn.info.server_version < 150000:
            return False
        moved = "false"
        if sequences:
            moved = (  # numbers only, from sequence_values(): no injection possible
                f"EXISTS (SELECT FROM (VALUES {sequences}) v(seq, last, start) "  # noqa: S608
                "WHERE pg_sequence_last_value(v.seq::regclass) IS DISTINCT FROM v.last)"
            )
        rollback = "" if conn.info.transaction_status == TransactionStatus.IDLE else "ROLLBACK; "
        try:
            # Our own counts reach the shared statistics when the session next goes idle. A
            # sequence that moved settles it in this first round trip (most tests that write
            # move one): 0.5 ms instead of 2 for the two.
            first = f"{rollback}RESET ROLE; SELECT {moved} FROM pg_stat_force_next_flush()"  # noqa: S608
            if _batch(conn, first) == "t":
                return False
            source = sql.Literal(self.pool.template).as_string(conn)
            return _batch(conn, _UNCHANGED.replace("{source}", source)) == "t"
        except psycopg.Error:
            return False

    def end(self, give_back: bool = True) -> None:
        """Close our connection; the copy is dropped (other sessions ended) in the background,
        or handed to the next test if nothing changed it.

        ``give_back=False``: the copy is kept; it is no longer the pool's to drop.
        """
        unchanged = give_back and self.unchanged()
        with contextlib.suppress(psycopg.Error):
            self.conn.close()
        if give_back:
            self.pool.give_back(self.info.dbname, unchanged)
