"""pytest-pgsql's frozen time (``pytest_pgsql.time``): ``SQLAlchemyFreezegun``, ``freeze_time``.

More than the original: the database's own ``now()`` is frozen (column defaults, triggers,
functions, and under clone or reset isolation other connections), not only the SQL text sent
through the connectable; and the freezer a ``with ... as freezer`` block gives moves the
database's clock with Python's (``freezer.tick()``, ``freezer.move_to()``).
"""

from __future__ import annotations

import datetime as dt
import re
from types import TracebackType
from typing import TYPE_CHECKING
from typing import Any

from pytest_pgsandbox._engine.clock.freezing import FrozenTime
from pytest_pgsandbox._engine.clock.freezing import When
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._time import freeze_time

if TYPE_CHECKING:
    from pytest_pgsandbox._engine.handle import PgDatabase

__all__ = ["SQLAlchemyFreezegun", "freeze_time"]


def _engine_of(connectable: Any) -> Any:
    bind = getattr(connectable, "bind", None) or connectable  # a Session
    return getattr(bind, "engine", bind)


def _libpq_info(connectable: Any) -> ConnInfo:
    """Where a SQLAlchemy engine, connection or bound session connects to."""
    url = _engine_of(connectable).url.set(drivername="postgresql")
    return ConnInfo.from_conninfo(url.render_as_string(hide_password=False))


def test_database_of(connectable: Any) -> PgDatabase | None:
    """The running test's database when ``connectable`` is on the plugin's ``pg_engine``
    (whose connections are the test's own), else None."""
    current = getattr(_engine_of(connectable), "_pgsb_current", None)
    handle: PgDatabase | None = current() if current is not None else None
    return handle


class SQLAlchemyFreezegun:
    """Freeze time in Python and in the database, as pytest-pgsql's class of that name.

    ``connectable`` is an engine, a connection or a bound session. On the plugin's engines
    (those of ``pg_engine`` and the fixtures) the clock is the test database's own; on any
    other engine, the database at its URL.
    """

    def __init__(self, connectable: Any, _handle: PgDatabase | None = None) -> None:
        from sqlalchemy.orm import Session

        if isinstance(connectable, Session) and connectable.bind is None:
            raise TypeError("Can't use unbound `Session` object for freezing.")
        self._connectable = getattr(connectable, "bind", None) or connectable
        self._handle = _handle if _handle is not None else test_database_of(connectable)
        self._own: FrozenTime | None = None
        self._hooked = False

    @property
    def _clock(self) -> FrozenTime:
        if self._handle is not None:
            return self._handle.time  # follows the handle when reset_db() restarts it
        if self._own is None:
            self._own = FrozenTime(_libpq_info(self._connectable))
        return self._own

    @property
    def is_frozen(self) -> bool:
        return self._clock.is_frozen

    @property
    def freezer(self) -> Any:
        """While frozen, freezegun's ``FrozenDateTimeFactory`` whose ``tick()`` and
        ``move_to()`` move the database's clock too; else None."""
        return self._clock.freezer

    def freeze(self, when: When = None, **freezegun_kwargs: Any) -> SQLAlchemyFreezegun:
        """Freeze both clocks at ``when`` (naive values are UTC); ``tick=True`` lets them run
        on from there."""
        unknown = sorted(set(freezegun_kwargs) - {"tick"})
        if unknown:
            raise TypeError(f"freeze() got arguments it does not take: {', '.join(unknown)}")
        self._clock.freeze(when, tick=bool(freezegun_kwargs.get("tick", False)))
        self._hook(True)
        return self

    def tick(self, delta: dt.timedelta | float = 1.0) -> SQLAlchemyFreezegun:
        self._clock.tick(delta)
        return self

    def move_to(self, when: When) -> SQLAlchemyFreezegun:
        self._clock.move_to(when)
        return self

    def unfreeze(self) -> None:
        self._hook(False)
        if self._handle is not None or self._own is not None:
            self._clock.unfreeze()

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

    def _hook(self, on: bool) -> None:
        from sqlalchemy import event

        if on and not self._hooked:
            event.listen(self._connectable, "before_cursor_execute", _rewrite, retval=True)
        elif not on and self._hooked:
            event.remove(self._connectable, "before_cursor_execute", _rewrite)
        self._hooked = on


# timeofday() in the text of a query, outside strings, quoted names and comments.
_TIMEOFDAY = re.compile(
    r"""(?P<skip>'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/)
    | (?<![\w.$"])(?P<call>timeofday\s*\(\s*\))""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
# pytest-pgsql's text for it: '2099-12-31 23:59:59.123000 +0000', from the frozen clock.
_PGSQL_TIMEOFDAY = (
    "pg_catalog.to_char(pgsandbox_clock.clock_timestamp() AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD HH24:MI:SS.US \"+0000\"')"
)


def rewrite_frozen(statement: str) -> str:
    """While frozen: the time keywords read from the database's clock, and ``timeofday()``
    in pytest-pgsql's format (PostgreSQL's own elsewhere: defaults, triggers, functions)."""
    from pytest_pgsandbox._engine.clock.dbclock import rewrite

    statement = rewrite(statement)
    if "timeofday" in statement.lower():
        statement = _TIMEOFDAY.sub(
            lambda m: m.group(0) if m.group("call") is None else _PGSQL_TIMEOFDAY, statement
        )
    return statement


def _rewrite(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    return rewrite_frozen(statement), parameters
