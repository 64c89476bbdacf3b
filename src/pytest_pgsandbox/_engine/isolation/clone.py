"""Clone isolation: every test gets a database of its own, copied from the template.

``CREATE DATABASE ... TEMPLATE`` costs tens of milliseconds even in RAM, so a background
thread keeps a few copies ready and drops used ones; a test waits only when it outruns the
thread. Any code may use the copy through its URL, on any number of connections, and commit.
A copy the test changed nothing in, or only rows of the template's tables, goes back to the
pool instead, those rows put back first (see :mod:`.recycle`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from pytest_pgsandbox._engine.isolation import recycle
from pytest_pgsandbox._engine.isolation.transaction import SESSION_RESET
from pytest_pgsandbox._engine.isolation.transaction import _batch
from pytest_pgsandbox._engine.isolation.transaction import as_new
from pytest_pgsandbox._engine.isolation.transaction import row_of
from pytest_pgsandbox._engine.isolation.transaction import sequence_values
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.errors import ServerError


def _text(value: object) -> str:
    """A value as the server's text output has it (for the booleans of the state query)."""
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


# Called on a connection to a recycled copy: its differences from a fresh one ([] if none).
Check = Callable[[psycopg.Connection[Any]], list[str]]


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
        recycling: bool = False,
        connect_ahead: bool = False,
    ) -> None:
        """``recycling``: copies tests wrote rows to come back too, once the rows are put back
        (PostgreSQL 15+; see :mod:`.recycle`). ``connect_ahead``: a third thread opens a
        connection to each ready copy, for ``take_connected()``."""
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
        self.recycled = 0
        # Where the template's sequences are: "unchanged" includes them. Read from the
        # template before the first copy is made.
        self.sequences: str | None = None
        # Its tables' rows, and each copy's counters (PostgreSQL 15+; with ``recycle``).
        self.recycling = recycling
        self.rows: recycle.TemplateRows | None = None
        self._states: dict[str, recycle.CopyState] = {}
        # Connections to ready copies, opened ahead of the tests that take them.
        self.connect_ahead = connect_ahead
        self._to_connect: deque[str] = deque()
        self._connecting: set[str] = set()
        self._conns: dict[str, psycopg.Connection[Any]] = {}
        # Each copy's object id: it is ours to drop even if a test replaced its label.
        self._oids: dict[str, int] = {}
        # Copies whose tests are over, to be put back by a fourth thread (with recycling),
        # so that a test's teardown does not wait for that; and how many it is on.
        self._to_restore: deque[CloneDatabase] = deque()
        self._restoring = 0

    def take(self) -> ConnInfo:
        """A fresh copy of the template; waits for one (up to the timeout) if none is ready."""
        info, conn = self.take_connected()
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
        return info

    def take_connected(self) -> tuple[ConnInfo, psycopg.Connection[Any] | None]:
        """``take()``, and a connection to the copy if one was opened ahead (else None)."""
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
            # A copy whose connection is open first (one just handed back is not yet); one
            # being opened is nearly there: cheaper to wait than to open another one.
            name: str | None = None
            while True:
                name = next((n for n in self._ready if n in self._conns), None)
                if name is None and any(n in self._connecting for n in self._ready):
                    left = deadline - time.monotonic()
                    if left > 0:
                        self._cond.wait(left)
                        continue
                break
            if name is None:
                name = self._ready[0]
            self._ready.remove(name)
            self._cond.notify_all()  # room for the next copy
            conn = self._conns.pop(name, None)
        return self.admin.for_db(name), conn

    def oid(self, name: str) -> int | None:
        """The object id of copy ``name`` when it was made (it keeps it through renames)."""
        with self._cond:
            return self._oids.get(name)

    def state(self, name: str) -> recycle.CopyState | None:
        """What the pool knows of copy ``name`` (None: it cannot be recycled)."""
        with self._cond:
            return self._states.get(name)

    def give_back(
        self, name: str, unchanged: bool = False, conn: psycopg.Connection[Any] | None = None
    ) -> None:
        """The test is done with ``name``: drop it in the background.

        ``unchanged``: it is as the template has it (nothing was written, or what was is put
        back), so the next test may have it as it is. ``conn``: with ``unchanged``, a
        connection to it, cleaned as a new one would be, that the next test gets (the pool
        closes it otherwise).
        """
        with self._cond:
            if unchanged and not self._closing:
                self._ready.appendleft(name)
                self.reused += 1
                if conn is not None:
                    self._conns[name] = conn
                    conn = None
                elif self.connect_ahead:
                    self._to_connect.append(name)
            else:
                self._to_drop.append(name)
                self._states.pop(name, None)
            self._cond.notify_all()
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def restore_later(self, copy: CloneDatabase) -> bool:
        """Put ``copy`` back (see ``CloneDatabase.restore``) and hand it on or drop it, in
        the background; False if the pool does not (then the caller does it)."""
        with self._cond:
            if self._closing or not self.recycling or not self._threads:
                return False
            self._to_restore.append(copy)
            self._cond.notify_all()
        return True

    def _start(self) -> None:
        # Two workers, each on a connection of its own: copies are made while used ones are
        # dropped, so a test rarely waits for either.
        if not self._threads:
            jobs = ["create", "drop"]
            if self.connect_ahead:
                jobs.append("connect")
            if self.recycling:
                jobs.append("restore")
            for job in jobs:
                work = {"connect": self._connect_ahead, "restore": self._restore_behind}.get(
                    job, self._work
                )
                thread = threading.Thread(
                    target=work, args=(job,), name=f"pgsandbox-clone-{job}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _next(self, job: str) -> str | None:
        with self._cond:
            while True:
                if self._closing:
                    return None
                coming = len(self._ready) + len(self._to_restore) + self._restoring
                if job == "create" and coming < self.size:
                    self._made += 1
                    return self._name_for(self._made)
                if job == "drop" and self._to_drop:
                    return self._to_drop.popleft()
                while job == "connect" and self._to_connect:
                    name = self._to_connect.popleft()
                    if name in self._ready and name not in self._conns:
                        self._connecting.add(name)
                        return name
                self._cond.wait()

    def _restore_behind(self, job: str) -> None:
        """Finish each copy whose test is over (``restore_later``); when the pool closes,
        those still waiting are dropped."""
        while True:
            with self._cond:
                while not self._to_restore and not self._closing:
                    self._cond.wait()
                if not self._to_restore:
                    return
                copy = self._to_restore.popleft()
                closing = self._closing
                self._restoring += 1
            try:
                if closing:
                    copy.finish(give_back=True, drop=True)
                else:
                    copy.finish()
            except Exception:  # whatever it was, the copy is not handed on
                with contextlib.suppress(Exception):
                    copy.finish(give_back=True, drop=True)
            finally:
                with self._cond:
                    self._restoring -= 1
                    self._cond.notify_all()

    def _connect_ahead(self, job: str) -> None:
        """Open the connection a test will use to each copy that is ready (one try each:
        a test whose copy has none opens its own).

        A new session reads the catalog for each relation it first uses: here it reads what
        the end of the test reads too (every sequence, the catalogs), so that the test's end
        does not pay for that.
        """
        while (name := self._next(job)) is not None:
            conn = None
            try:
                conn = psycopg.connect(
                    self.admin.for_db(name).conninfo(), connect_timeout=max(1, round(self.timeout))
                )
                if self.sequences is not None and self.state(name) is not None:
                    # Prepared, too: its planning costs more than running it.
                    conn.execute(
                        recycle.state_query(conn, self.template, self.sequences), prepare=True
                    )
                    conn.rollback()
            except psycopg.Error:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None
            with self._cond:
                self._connecting.discard(name)
                if conn is not None and not self._closing and name in self._ready:
                    self._conns[name] = conn
                    conn = None
                self._cond.notify_all()
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()

    def _work(self, job: str) -> None:
        keep = False
        try:
            with connect(self.admin, timeout=self.timeout) as conn:
                if job == "create":
                    # One connection to the template first: where its sequences are (what
                    # "unchanged" compares with), and its relation cache file is then copied
                    # with it, so the first connection to each copy starts faster (a server
                    # removes those files when it starts). A template that takes no
                    # connections leaves sequences unknown: then no copy is handed on.
                    # Where copies are recycled (PostgreSQL 15+): a transaction id newer
                    # than any row of the template (the mark), and, as a superuser (who
                    # alone may restore rows), the template's rows (see recycle).
                    keep = self.recycling and conn.info.server_version >= 150000
                    mark = recycle.new_mark(conn) if keep else ""
                    with (
                        contextlib.suppress(psycopg.Error),
                        connect(self.admin.for_db(self.template), timeout=self.timeout) as t,
                    ):
                        self.sequences = sequence_values(t)
                        if keep and recycle.superuser(t):  # only one may restore rows
                            self.rows = recycle.read_template(t, mark)
                while (name := self._next(job)) is not None:
                    if job == "drop":
                        with self._cond:
                            oid = self._oids.pop(name, None)
                        provision.drop_database(conn, name, oid)
                        continue
                    provision.create_database(
                        conn, name, self._label, self.template, self.strategy, self.only_role
                    )
                    oid = provision.database_oid(conn, name)
                    state = None
                    if keep:
                        state = recycle.CopyState(recycle.fingerprint(conn, name), mark)
                    with self._cond:
                        if oid is not None:
                            self._oids[name] = oid
                        if state is not None:
                            self._states[name] = state
                        self._ready.append(name)
                        if self.connect_ahead:
                            self._to_connect.append(name)
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
        for conn in self._conns.values():
            with contextlib.suppress(psycopg.Error):
                conn.close()
        self._conns.clear()
        if not drop:
            return
        leftovers = list(self._ready) + list(self._to_drop)
        if not leftovers:
            return
        with contextlib.suppress(psycopg.Error), connect(self.admin, timeout=self.timeout) as c:
            for name in leftovers:
                provision.drop_database(c, name, self._oids.pop(name, None))
        self._ready.clear()
        self._to_drop.clear()
        self._states.clear()


class CloneDatabase:
    """The test's own copy and the connection ``pg`` gives it."""

    # How long a session of ours that was closed may take to leave the copy; and one of the
    # test's own (an engine disposed of just before, or left open: then the copy is dropped).
    LEAVING = 2.0
    OTHERS_LEAVING = 0.02

    def __init__(self, pool: ClonePool, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout
        self.info, ahead = pool.take_connected()
        state = pool.state(self.info.dbname)
        # Never used by a test before (then the picture of a fresh copy may be taken).
        self.fresh = state is None or state.pid is None
        self.conn: psycopg.Connection[Any] = ahead or psycopg.connect(
            self.info.conninfo(), connect_timeout=max(1, round(timeout))
        )
        self._ours = {self.conn.info.backend_pid}  # the test may close it, or replace it

    def restore(self, check: Check | None = None) -> tuple[bool, list[str]]:
        """Whether the copy is as the template has it now: it was not changed, or only rows
        of the template's tables and sequences were, and those are put back (see
        :mod:`.recycle`). False when that cannot be known or done.

        ``check``: called on a connection to the copy once it is put back; what it returns
        (differences from a fresh copy) means the copy is not handed on.
        """
        pool, name = self.pool, self.info.dbname
        state, sequences = pool.state(name), pool.sequences
        if state is None or sequences is None:
            return False, []
        conn = self.conn
        try:
            if conn.closed or conn.broken:  # the test closed it: one of our own to look
                conn = self.conn = connect(pool.admin.for_db(name), timeout=self.timeout)
            idle = conn.info.transaction_status == TransactionStatus.IDLE
            _batch(conn, ("" if idle else "ROLLBACK; ") + SESSION_RESET)
            as_new(conn)  # our queries and the check must not get the test's row factory
            conn.autocommit = True
            query = recycle.state_query(conn, pool.template, sequences)
            row = self._state_row(query)
            if len(row) == 7 and row[2] and self._wait_for(state, row[2]):
                row = self._state_row(query)  # the sessions' counts have arrived
            if len(row) != 7:
                return False, []
            counts, superuser, others, blocked, fingerprint, written, moved = row
            if counts != "t" or others or blocked != "f" or fingerprint != state.fingerprint:
                return False, []
            now = recycle.parse_counts(written)
            wrote = recycle.written(state.counts, now)
            if wrote is None:
                return False, []
            wrote = {o: n for o, n in wrote.items() if o not in recycle.STATISTICS}
            state.counts = now
            if wrote or moved == "t":
                if superuser != "t" or pool.rows is None or state.rows > recycle.ROWS_LIMIT:
                    return False, []
                plan = recycle.restore_plan(pool.rows, state, wrote)
                if plan is None:
                    return False, []
                statements, rewritten = plan
                restored = [o for o in wrote if o >= recycle.FIRST_USER_OID]
                replica = recycle.needs_replica(pool.rows, wrote, rewritten)
                mark, own, still = row_of(
                    conn,
                    recycle.restore_sql_for(
                        statements, sequences if moved == "t" else "", restored, rewritten, replica
                    ),
                )
                if still:
                    return False, []
                after = recycle.parse_counts(own)
                for oid, (ins, _, dele) in after.items():
                    was = now.get(oid, (0, 0, 0))
                    state.rows += ins - was[0] + dele - was[2]
                state.counts = {**now, **after}
                if mark:
                    state.mark = mark
                pool.recycled += 1
            leaks = check(conn) if check is not None else []
            if leaks:
                return False, leaks
            state.pid = conn.info.backend_pid
            return True, []
        except psycopg.Error:
            return False, []

    def _state_row(self, query: str) -> tuple[str | None, ...]:
        """The state query's row, as text (prepared: the connection opened ahead has it)."""
        cursor = self.conn.cursor(row_factory=tuple_row)  # whatever the test's factory is
        found = cursor.execute(query, prepare=True).fetchone()
        if found is None:
            return ()
        return tuple(None if v is None else _text(v) for v in found)

    def _wait_for(self, state: recycle.CopyState, pids: str) -> bool:
        """Wait for the other sessions on the copy to leave: ours that were closed (the last
        test's, the first connection of this one) up to ``LEAVING``, any other briefly (True
        when all have left)."""
        ours = {*self._ours, state.pid}
        wait = self.LEAVING if {int(p) for p in pids.split()} <= ours else self.OTHERS_LEAVING
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(0.001)
            if not recycle.others(self.conn):
                return True
        return False

    def end(self, give_back: bool = True, check: Check | None = None) -> list[str]:
        """The copy is dropped (other sessions ended) in the background, or handed to the
        next test once it is as the template has it (see ``restore``), with our connection:
        a new session would pay for its start and its first catalog reads again. Otherwise
        our connection is closed. Where the pool recycles copies, that is done by its own
        thread, so the test does not wait for it, unless there is a ``check``.

        ``give_back=False``: the copy is kept; it is no longer the pool's to drop.
        ``check``: see ``restore``; what it found is returned (the copy is then dropped).
        """
        if give_back and check is None and self.pool.restore_later(self):
            return []
        return self.finish(give_back, check)

    def finish(
        self, give_back: bool = True, check: Check | None = None, drop: bool = False
    ) -> list[str]:
        """``end``'s work, done here (``drop``: do not try to hand the copy on)."""
        restored = self.restore(check) if give_back and not drop else (False, [])
        recycled, leaks = restored
        conn = self.conn if recycled and as_new(self.conn) else None
        if conn is None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
        if give_back:
            self.pool.give_back(self.info.dbname, recycled, conn)
        return leaks
