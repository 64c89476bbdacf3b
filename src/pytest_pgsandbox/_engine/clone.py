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

from pytest_pgsandbox._engine import provision
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
    ) -> None:
        self.admin = admin
        self.template = template
        self._name_for = name_for
        self._label = label
        self.size = max(1, size)
        self.timeout = timeout
        self._ready: deque[str] = deque()
        self._to_drop: deque[str] = deque()
        self._made = 0
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

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

    def give_back(self, name: str) -> None:
        """The test is done with ``name``: drop it in the background."""
        with self._cond:
            self._to_drop.append(name)
            self._cond.notify_all()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name="pgsandbox-clone-pool", daemon=True
            )
            self._thread.start()

    def _next_job(self) -> tuple[str, str] | None:
        with self._cond:
            while True:
                if self._closing:
                    return None
                if len(self._ready) < self.size:  # tests wait on these: first
                    self._made += 1
                    return "create", self._name_for(self._made)
                if self._to_drop:
                    return "drop", self._to_drop.popleft()
                self._cond.wait()

    def _work(self) -> None:
        try:
            with connect(self.admin, timeout=self.timeout) as conn:
                while (job := self._next_job()) is not None:
                    kind, name = job
                    if kind == "create":
                        provision.create_database(conn, name, self._label, self.template)
                        with self._cond:
                            self._ready.append(name)
                            self._cond.notify_all()
                    else:
                        provision.drop_database(conn, name)
        except (psycopg.Error, PgSandboxError) as exc:
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def close(self, drop: bool = True) -> None:
        """Stop the thread; drop every copy still around unless the server is going away."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
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


class CloneDatabase:
    """The test's own copy and the connection ``pg`` gives it."""

    def __init__(self, pool: ClonePool, timeout: float) -> None:
        self.pool = pool
        self.info = pool.take()
        self.conn: psycopg.Connection[Any] = psycopg.connect(
            self.info.conninfo(), connect_timeout=max(1, round(timeout))
        )

    def end(self) -> None:
        """Close our connection; the copy is dropped (other sessions ended) in the background."""
        with contextlib.suppress(psycopg.Error):
            self.conn.close()
        self.pool.give_back(self.info.dbname)
