"""Python's clock and the database's, frozen and moved together.

Python's side is freezegun when it is installed, else time-machine. The database's side is
the clock of :mod:`.dbclock`: a row written through a connection of its
own, in autocommit, so that every connection to the test's database sees it at once and no
rollback of the test's (or the application's) can take it away. The test's own connection
also gets its time keywords (``CURRENT_TIMESTAMP``...) rewritten while time is frozen.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Callable
from types import TracebackType
from typing import Any
from typing import TypeVar

import psycopg

from pytest_pgsandbox._engine.clock import dbclock
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import PgSandboxError

F = TypeVar("F", bound=Callable[..., Any])
When = str | dt.datetime | dt.date | None

INSTALL_HINT = "freezing time needs freezegun or time-machine: pip install 'pytest-pgsandbox[time]'"


def as_instant(when: When) -> dt.datetime:
    """``when`` as an aware datetime; naive values are UTC (as in pytest-pgsql)."""
    if when is None:
        return dt.datetime.now(dt.timezone.utc)
    if isinstance(when, str):
        try:
            parsed = dt.datetime.fromisoformat(when.strip().replace(" ", "T", 1))
        except ValueError:
            try:
                from dateutil import parser  # type: ignore[import-untyped]
            except ImportError:
                parsed = None
            else:
                try:
                    parsed = parser.parse(when)
                except (ValueError, OverflowError):
                    parsed = None
            if parsed is None:
                raise PgSandboxError(
                    f"freeze_time({when!r}): not a date or time; write it as ISO 8601, "
                    "e.g. '1999-12-31 23:59:59' or '1999-12-31T23:59:59+00:00'"
                ) from None
        when = parsed
    if isinstance(when, dt.date) and not isinstance(when, dt.datetime):
        when = dt.datetime.combine(when, dt.time())
    if not isinstance(when, dt.datetime):
        raise PgSandboxError(f"freeze_time({when!r}): give a datetime, a date or a string")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when


class _PythonClock:
    """freezegun or time-machine behind one small interface."""

    def __init__(self, at: dt.datetime, ticking: bool) -> None:
        import importlib

        try:
            freezegun: Any = importlib.import_module("freezegun")
        except ImportError:
            freezegun = None
        if freezegun is not None:
            self._patcher: Any = freezegun.freeze_time(at, tick=ticking)
            self.factory: Any = self._patcher.start()
            self._move = self.factory.move_to
            self._shift = self.factory.tick
            return
        try:
            time_machine: Any = importlib.import_module("time_machine")
        except ImportError:
            raise PgSandboxError(INSTALL_HINT) from None
        self._patcher = time_machine.travel(at, tick=ticking)
        self.factory = self._patcher.start()
        self._move = self.factory.move_to
        self._shift = self.factory.shift

    def move_to(self, at: dt.datetime) -> None:
        self._move(at)

    def shift(self, delta: dt.timedelta) -> None:
        self._shift(delta)

    def stop(self) -> None:
        self._patcher.stop()


class FrozenTime:
    """Time frozen in Python and in the test's database.

    Start it with :meth:`freeze` (or ``pg.freeze_time(when)``), move it with :meth:`tick` and
    :meth:`move_to`, end it with :meth:`unfreeze`. As a context manager it unfreezes on exit;
    as a decorator it freezes around the function.
    """

    def __init__(
        self,
        info: ConnInfo,
        test_conn: psycopg.Connection[Any] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._info = info
        self._test_conn = test_conn
        self._timeout = timeout
        self._side: psycopg.Connection[Any] | None = None
        self._python: _PythonClock | None = None
        self._ticking = False
        self._cursor_factory: Any = None

    # -- state ---------------------------------------------------------------------------

    @property
    def is_frozen(self) -> bool:
        return self._python is not None

    @property
    def freezer(self) -> Freezer | None:
        """While frozen, freezegun's ``FrozenDateTimeFactory`` (or time-machine's
        coordinates) whose ``tick()`` and ``move_to()`` move the database's clock too;
        else None."""
        return None if self._python is None else Freezer(self, self._python.factory)

    @property
    def now(self) -> dt.datetime:
        """The frozen instant (an aware datetime), or the real time when not frozen."""
        return dt.datetime.now(dt.timezone.utc)

    # -- moving time ---------------------------------------------------------------------

    def freeze(self, when: When = None, tick: bool = False) -> FrozenTime:
        """Freeze both clocks at ``when`` (default: now); with ``tick``, they go on from it."""
        at = as_instant(when)
        self.unfreeze()
        self._python = _PythonClock(at, tick)
        self._ticking = tick
        try:
            self._write()
            self._rewrite_test_queries(True)
        except BaseException:
            self.unfreeze()
            raise
        return self

    def tick(self, delta: dt.timedelta | float = 1.0) -> FrozenTime:
        """Move both clocks forward by ``delta`` (a timedelta or seconds)."""
        if not isinstance(delta, dt.timedelta):
            delta = dt.timedelta(seconds=delta)
        self._require_frozen("tick").shift(delta)
        self._write()
        return self

    def move_to(self, when: When) -> FrozenTime:
        """Jump both clocks to ``when``."""
        self._require_frozen("move_to").move_to(as_instant(when))
        self._write()
        return self

    def unfreeze(self) -> None:
        """Let both clocks run again (nothing happens if they are not frozen)."""
        python, self._python = self._python, None
        self._rewrite_test_queries(False)
        try:
            if python is not None:
                python.stop()
        finally:
            side, self._side = self._side, None
            if side is not None:
                with contextlib.suppress(psycopg.Error):
                    if not side.closed and not side.broken:
                        dbclock.unfreeze(side)
                side.close()

    stop = unfreeze

    # -- context manager and decorator ---------------------------------------------------

    def __enter__(self) -> Any:
        if not self.is_frozen:
            self.freeze()
        return self.freezer

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unfreeze()

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    # -- the database's side --------------------------------------------------------------

    def _require_frozen(self, what: str) -> _PythonClock:
        if self._python is None:
            raise PgSandboxError(f"{what}(): time is not frozen; call freeze(when) first")
        return self._python

    def _write(self) -> None:
        side = self._side
        if side is None or side.closed or side.broken:
            side = self._side = connect(self._info, timeout=self._timeout)
            side.execute("SET lock_timeout = '10s'")
            if not dbclock.installed(side):
                self._install(side)
        dbclock.freeze(side, dt.datetime.now(dt.timezone.utc), self._ticking)

    def _install(self, side: psycopg.Connection[Any]) -> None:
        """A database made without pgsandbox's template (an external server, no schema)."""
        try:
            dbclock.install(side)
        except psycopg.Error as exc:
            raise PgSandboxError(
                f"could not add pgsandbox's clock to database {self._info.dbname!r}: "
                f"{str(exc).strip()}. Configure a schema (any schema setting) so that the "
                "clock is built into the template, or let the role create schemas there."
            ) from None
        if self._test_conn is not None and not self._test_conn.closed:
            # Connections opened before the install see the old search_path.
            with contextlib.suppress(psycopg.Error):
                self._test_conn.execute(
                    "SELECT set_config('search_path', %s, false)", (dbclock.SEARCH_PATH,)
                )

    def _rewrite_test_queries(self, on: bool) -> None:
        conn = self._test_conn
        if conn is None:
            return
        if on and self._cursor_factory is None:
            self._cursor_factory = conn.cursor_factory
            conn.cursor_factory = rewriting_cursor(conn.cursor_factory)
        elif not on and self._cursor_factory is not None:
            conn.cursor_factory = self._cursor_factory
            self._cursor_factory = None


class Freezer:
    """The Python clock's own freezer (``with clock as freezer``), moving both clocks.

    ``tick()`` and ``move_to()`` go to :class:`FrozenTime`; anything else (calling it for the
    time, time-machine's ``shift``...) to the library's object.
    """

    def __init__(self, clock: FrozenTime, factory: Any) -> None:
        self._clock = clock
        self._factory = factory

    def tick(self, delta: dt.timedelta | float = 1.0) -> Freezer:
        self._clock.tick(delta)
        return self

    def move_to(self, when: When) -> None:
        self._clock.move_to(when)

    def __call__(self) -> Any:
        return self._factory()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._factory, name)


_REWRITING: dict[type[Any], type[Any]] = {}


def rewriting_cursor(base: type[Any]) -> type[Any]:
    """A subclass of the cursor class ``base`` that rewrites time keywords in its queries."""
    found = _REWRITING.get(base)
    if found is not None:
        return found

    def execute(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        return base.execute(self, _rewritten(query), params, **kwargs)

    def executemany(self: Any, query: Any, params_seq: Any, **kwargs: Any) -> Any:
        return base.executemany(self, _rewritten(query), params_seq, **kwargs)

    made = type(f"Frozen{base.__name__}", (base,), {"execute": execute, "executemany": executemany})
    _REWRITING[base] = made
    return made


def _rewritten(query: Any) -> Any:
    if isinstance(query, str):
        return dbclock.rewrite(query)
    if isinstance(query, bytes):
        return dbclock.rewrite(query.decode()).encode()
    return query  # psycopg.sql objects are composed by the caller: left as they are
