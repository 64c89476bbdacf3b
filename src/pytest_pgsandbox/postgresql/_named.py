"""Each test's database under the name the suite asked for (``dbname``).

pytest-postgresql's client fixture creates a database named ``dbname`` for every test and
drops it after. Here the copy comes ready-made from the clone pool under a generated name;
before anyone connects to it, it is renamed ``dbname`` (and handed to the fixture's
``user``), which is a catalog update, not a copy. After the test it goes back to its own name
and to the pool. That step is put off until the name is wanted again (the next test, or the
end of the session), so that the sessions the test leaves behind have ended by then instead of
being waited for; whatever still uses the database then is ended, as pytest-postgresql's
janitor ends it before its ``DROP DATABASE``.

Under xdist the workers share one server, so each worker's names end with its id
(``testsgw0``), as pytest-postgresql's ``postgresql_noproc`` names them.

A name that is taken:

- by another client fixture of the same test: that fixture keeps the copy's generated name;
- by a database pgsandbox labelled whose run has ended (or any labelled one, with
  ``--postgresql-drop-test-database``): it is dropped first;
- by anything else (a database pgsandbox did not create, another run's that is still going):
  it is left alone, and the tests get generated names, with one warning that says why.
"""

from __future__ import annotations

import contextlib
import socket
import time
import warnings
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg import sql

from pytest_pgsandbox._engine.isolation.clone import CloneDatabase
from pytest_pgsandbox._engine.isolation.clone import ClonePool
from pytest_pgsandbox._engine.isolation.transaction import _batch
from pytest_pgsandbox._engine.isolation.transaction import as_new
from pytest_pgsandbox._engine.servers import janitor
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import ServerError
from pytest_pgsandbox.postgresql._user import Identity

Conn = psycopg.Connection[Any]


def xdistify(dbname: str, worker: str | None) -> str:
    """``dbname`` as this xdist worker's (``testsgw0``); as it is without xdist."""
    return f"{dbname}{worker}" if worker else dbname


@dataclass
class _Done:
    """A copy a test has finished with that still carries the wanted name."""

    real: str  # its name in the pool
    pool: ClonePool
    unchanged: bool
    owned: bool  # handed to another role: it goes back to the admin's
    # With ``unchanged``: the test's connection, cleaned for the next test that wants this
    # name (made with these options), which then gets both as they are.
    conn: Conn | None = None
    options: str = ""
    user: str | None = None  # whom ``conn`` logged in as

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None


class Names:
    """The session's named copies: which names running tests hold, and which finished copies
    still carry theirs. One admin connection, opened when first needed."""

    def __init__(self, admin: ConnInfo, run: str, timeout: float) -> None:
        self.admin = admin
        self.run = run
        self.timeout = timeout
        self._conn: Conn | None = None
        self._held: set[str] = set()
        self._done: dict[str, _Done] = {}
        self._blocked: set[str] = set()  # names taken by what is not ours to drop

    def _admin(self) -> Conn:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.admin, timeout=self.timeout)
        return self._conn

    def reuse(self, wanted: str, pool: ClonePool, owner: str | None, user: str) -> _Done | None:
        """The finished copy that carries ``wanted`` if the test may have it as it is (it
        is as the template has it, from ``pool``, owned by ``owner``; its connection, if
        any, logged in as ``user``); the name is then held."""
        done = self._done.get(wanted)
        if done is None or not done.unchanged or done.pool is not pool or wanted in self._held:
            return None
        if done.owned != (owner is not None) or (done.conn is not None and done.user != user):
            return None
        del self._done[wanted]
        self._held.add(wanted)
        return done

    def claim(self, real: str, wanted: str, owner: str | None, drop_first: bool) -> str:
        """Give the pool's copy ``real`` the name ``wanted`` (if it can have it) and the
        ``owner``; the name the test's database has now."""
        conn = self._admin()
        if wanted in self._held or wanted in self._blocked:  # another client fixture has it
            wanted = real
        steps: list[sql.Composable] = []
        done = self._done.pop(wanted, None) if wanted != real else None
        if done is not None:
            done.close()
            try:
                self._quiesce(wanted)
            except BaseException:
                self._done[wanted] = done  # still carries the name: put back at the end
                raise
            steps += self._back(wanted, done)
        steps += self._rename(real, wanted, owner)
        try:
            self._run(conn, steps)
        except errors.DuplicateDatabase:
            if done is not None:  # the batch was undone: put that copy back first
                self._run(conn, self._back(wanted, done))
                self._returned(done)
                done = None
            if not self._clear(conn, wanted, drop_first):
                wanted = real
            self._run(conn, self._rename(real, wanted, owner))
        if done is not None:
            self._returned(done)
        if wanted != real:
            self._held.add(wanted)
        return wanted

    def release(
        self,
        name: str,
        real: str,
        pool: ClonePool,
        unchanged: bool,
        owned: bool,
        conn: Conn | None = None,
        options: str = "",
    ) -> None:
        """The test is done with ``name`` (the pool's ``real``): back to the pool, when the
        name is next wanted or the session ends. ``conn``: the test's connection, cleaned,
        for the next test that wants ``name`` (closed here otherwise)."""
        self._held.discard(name)
        user = conn.info.user if conn is not None else None
        done = _Done(real, pool, unchanged, owned, conn, options, user)
        if name == real:  # never renamed: only its owner to put back
            done.close()
            if owned:
                try:
                    self._quiesce(name)
                    self._run(self._admin(), self._back(name, done))
                except (psycopg.Error, ServerError):
                    pool.give_back(real)  # dropped, then: it may not be handed on as it is
                    return
            self._returned(done)
            return
        self._done[name] = done

    def close(self) -> None:
        """Every finished copy back under its own name, to its pool; the connection closed."""
        try:
            for name, done in list(self._done.items()):
                del self._done[name]
                done.close()
                with contextlib.suppress(psycopg.Error, ServerError):
                    self._quiesce(name)
                    self._run(self._admin(), self._back(name, done))
                    self._returned(done)
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _rename(self, real: str, wanted: str, owner: str | None) -> list[sql.Composable]:
        steps: list[sql.Composable] = []
        if wanted != real:
            steps.append(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(real), sql.Identifier(wanted)
                )
            )
        if owner is not None:
            steps.append(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(wanted), sql.Identifier(owner)
                )
            )
        return steps

    def _back(self, name: str, done: _Done) -> list[sql.Composable]:
        steps: list[sql.Composable] = []
        if done.owned:
            steps.append(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(name), sql.Identifier(self.admin.user)
                )
            )
        if name != done.real:
            steps.append(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(name), sql.Identifier(done.real)
                )
            )
        return steps

    @staticmethod
    def _returned(done: _Done) -> None:
        done.pool.give_back(done.real, done.unchanged)

    @staticmethod
    def _run(conn: Conn, steps: list[sql.Composable]) -> None:
        """The steps in one round trip (one implicit transaction: all or none)."""
        if steps:
            _batch(conn, "; ".join(step.as_string(conn) for step in steps))

    def _quiesce(self, name: str) -> None:
        """End the sessions still on ``name`` and wait until they are gone (a rename waits
        for them in steps of 100 ms)."""
        conn = self._admin()
        query = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()"
        )
        row = conn.execute(query, (name,)).fetchone()
        if not row or not row[0]:
            return
        deadline = time.monotonic() + self.timeout
        delay = 0.0005
        while True:
            time.sleep(delay)
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone()
            if not row or not row[0]:
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the sessions on database {name!r} did not end within {self.timeout:g} s "
                    "of being told to, so it cannot be handed to the next test under that "
                    "name. Something holds them open (a server under very heavy load?)."
                )
            delay = min(delay * 2, 0.05)

    def _clear(self, conn: Conn, name: str, drop_first: bool) -> bool:
        """Make way for ``name`` if it is a leftover of ours; False if it stays."""
        label = provision.database_label(conn, name)
        if label is not None and (drop_first or label.get("run") == self.run or _ended(label)):
            provision.drop_database(conn, name)
            return True
        if name not in self._blocked:
            self._blocked.add(name)
            if label is None:
                why = "pgsandbox did not create it (it has no pgsandbox label)"
                fix = "drop or rename it if it is a leftover, or"
            else:
                why = "a test run that is still going created it"
                fix = "let that run finish, pass --postgresql-drop-test-database to drop it, or"
            warnings.warn(
                pytest.PytestWarning(
                    f"pgsandbox: a database named {name!r} exists on the server and {why}, so "
                    "it is left alone and the tests that ask for that name get databases with "
                    f"generated names instead; {fix} give the client fixture another dbname."
                ),
                stacklevel=1,
            )
        return False


def _ended(label: dict[str, Any]) -> bool:
    """Whether the process that made a labelled database (on this host) is gone."""
    pid = int(label.get("pid", 0) or 0)
    return label.get("host") == socket.gethostname() and pid > 0 and janitor.cmdline(pid) is None


class _Unchanged(CloneDatabase):
    """Clone isolation's own test of whether a copy may be handed on (nothing changed, or
    only rows, put back), asked of a copy that this module connected to under its wanted
    name. A copy handed to another owner is never handed on: its row is not the pool's."""

    def __init__(self, pool: ClonePool, conn: Conn, real: str) -> None:  # no copy taken here
        self.pool = pool
        self.timeout = pool.timeout
        self.info = pool.admin.for_db(real)  # what the pool knows it by
        self.fresh = False
        self.conn = conn
        self._ours = {conn.info.backend_pid}

    def unchanged(self) -> bool:
        """Whether the copy is as the template has it now (see ``CloneDatabase.restore``)."""
        return self.restore()[0]


class NamedCopy:
    """A test's copy of the template under its wanted name, and the test's connection."""

    def __init__(
        self,
        names: Names,
        pool: ClonePool,
        identity: Identity,
        wanted: str,
        drop_first: bool,
    ) -> None:
        self.names = names
        self.pool = pool
        self.conn: Conn | None = None
        self.options = ""
        self.owned = identity.owner is not None
        # The last test's copy under this name, if it is as the template has it: no rename,
        # and its connection too (see ``connect``).
        user = identity.info(names.admin, wanted).user
        self._kept = names.reuse(wanted, pool, identity.owner, user)
        if self._kept is not None:
            self.real, self.name = self._kept.real, wanted
        else:
            self.real = pool.take().dbname
            try:
                self.name = names.claim(self.real, wanted, identity.owner, drop_first)
            except BaseException:
                pool.give_back(self.real)
                raise
        self.info = identity.info(names.admin, self.name)

    def connect(self, options: str) -> Conn:
        """The test's connection (closed by ``end``, or handed to the next test with the
        copy): the last test's, if it was made with the same ``options``."""
        kept, self._kept = self._kept, None
        if kept is not None and kept.conn is not None and kept.options == options:
            conn = kept.conn
            kept.conn = None
        else:
            if kept is not None:
                kept.close()
            conn = psycopg.connect(
                self.info.conninfo(),
                connect_timeout=max(1, round(self.names.timeout)),
                options=options or None,
            )
        self.conn, self.options = conn, options
        return conn

    def end(self) -> None:
        """The test is over: the copy goes back (handed on as it is if nothing changed it)."""
        if self._kept is not None:  # never connected to: the last test's connection is spare
            self._kept.close()
            self._kept = None
        conn = self.conn
        unchanged = conn is not None and _Unchanged(self.pool, conn, self.real).unchanged()
        keep = conn if unchanged and conn is not None and as_new(conn) else None
        if conn is not None and keep is None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
        self.names.release(
            self.name, self.real, self.pool, unchanged, self.owned, keep, self.options
        )
