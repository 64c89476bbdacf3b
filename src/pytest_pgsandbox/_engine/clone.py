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
        strategy: str | None = None,
    ) -> None:
        self.admin = admin
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
                while (name := self._next(job)) is not None:
                    if job == "drop":
                        provision.drop_database(conn, name)
                        continue
                    provision.create_database(conn, name, self._label, self.template, self.strategy)
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


class CloneDatabase:
    """The test's own copy and the connection ``pg`` gives it."""

    def __init__(self, pool: ClonePool, timeout: float) -> None:
        self.pool = pool
        self.info = pool.take()
        self.conn: psycopg.Connection[Any] = psycopg.connect(
            self.info.conninfo(), connect_timeout=max(1, round(timeout))
        )

    def end(self, give_back: bool = True) -> None:
        """Close our connection; the copy is dropped (other sessions ended) in the background.

        ``give_back=False``: the copy is kept; it is no longer the pool's to drop.
        """
        with contextlib.suppress(psycopg.Error):
            self.conn.close()
        if give_back:
            self.pool.give_back(self.info.dbname)
