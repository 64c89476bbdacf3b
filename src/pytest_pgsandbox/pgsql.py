"""pytest-pgsql's API on SQLAlchemy 2 and psycopg 3.

Switch a pytest-pgsql suite over by replacing the package and one import::

    import pytest_pgsandbox.pgsql as pytest_pgsql

The fixtures ``postgresql_db``, ``transacted_postgresql_db``, ``database_uri`` and
``pg_engine`` come with the plugin. Unlike pytest-pgsql's, ``postgresql_db`` leaves nothing
behind: it runs on reset isolation, so committed rows, ALTERs, dropped tables and changed
settings are all put back, and its frozen time reaches ``now()`` in defaults and triggers.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING
from typing import Any

import pytest

from pytest_pgsandbox._engine.clock.freezing import FrozenTime
from pytest_pgsandbox._engine.clock.freezing import When
from pytest_pgsandbox._engine.helpers import DatabaseHelpers
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._time import freeze_time
from pytest_pgsandbox.errors import PgSandboxError

if TYPE_CHECKING:
    import psycopg

    from pytest_pgsandbox._engine.handle import PgDatabase

__all__ = [
    "DatabaseIsDirtyError",
    "DatabaseRestoreFailedError",
    "Error",
    "NoSnapshotAvailableError",
    "PostgreSQLTestDB",
    "PostgreSQLTestDBBase",
    "SQLAlchemyFreezegun",
    "TransactedPostgreSQLTestDB",
    "create_engine_fixture",
    "errors",
    "freeze_time",
]

# -- errors (pytest_pgsql.errors) -----------------------------------------------------------


class Error(PgSandboxError):
    """The base class of pytest-pgsql's errors."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])


class DatabaseRestoreFailedError(Error):
    """The database could not be put back as it was."""


class DatabaseIsDirtyError(DatabaseRestoreFailedError):
    """Couldn't restore the database to its original state due to committed changes."""

    def __init__(self, message: str | None = None, state_details: Any = None) -> None:
        super().__init__(message)
        self.state_details = state_details


class NoSnapshotAvailableError(DatabaseRestoreFailedError):
    """Can't restore the database - no snapshot was given to the class."""


class _Errors:
    """``pytest_pgsql.errors`` as a namespace."""

    Error = Error
    DatabaseRestoreFailedError = DatabaseRestoreFailedError
    DatabaseIsDirtyError = DatabaseIsDirtyError
    NoSnapshotAvailableError = NoSnapshotAvailableError


errors = _Errors


# -- time (pytest_pgsql.time) ---------------------------------------------------------------


def _libpq_info(connectable: Any) -> ConnInfo:
    """Where a SQLAlchemy engine, connection or bound session connects to."""
    bind = getattr(connectable, "bind", None) or connectable  # a Session
    engine = getattr(bind, "engine", bind)
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return ConnInfo.from_conninfo(url)


class SQLAlchemyFreezegun:
    """Freeze time in Python and in the database, as pytest-pgsql's class of that name.

    More than the original: the database's own ``now()`` is frozen (column defaults,
    triggers, functions, and under clone or reset isolation other connections), not only the
    SQL text sent through ``connectable``. Queries sent through ``connectable`` also get
    ``CURRENT_TIMESTAMP`` and the other time keywords rewritten while frozen.
    """

    def __init__(self, connectable: Any, _handle: PgDatabase | None = None) -> None:
        from sqlalchemy.orm import Session

        if isinstance(connectable, Session) and connectable.bind is None:
            raise TypeError("Can't use unbound `Session` object for freezing.")
        self._connectable = getattr(connectable, "bind", None) or connectable
        if _handle is not None:
            self._clock = _handle.time
        else:
            self._clock = FrozenTime(_libpq_info(connectable))
        self._hooked = False

    @property
    def is_frozen(self) -> bool:
        return self._clock.is_frozen

    @property
    def freezer(self) -> Any:
        """freezegun's ``FrozenDateTimeFactory`` while frozen, else None."""
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


def _rewrite(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    from pytest_pgsandbox._engine.clock.dbclock import rewrite

    return rewrite(statement), parameters


# -- databases (pytest_pgsql.database) ------------------------------------------------------


class PostgreSQLTestDBBase(DatabaseHelpers, metaclass=abc.ABCMeta):
    """What both database fixtures share: ``session``, ``postgresql_url``, ``time``, helpers.

    Made by the fixtures (which pass ``_handle``, the test's ``pg`` database); made by hand
    on a SQLAlchemy engine or connection, the helpers work but ``is_dirty``/``reset_db``
    need a fixture's database.
    """

    def __init__(
        self,
        url: str,
        connectable: Any,
        restore_state: Any = None,
        *,
        _handle: PgDatabase | None = None,
        _commit_helpers: bool = False,
    ) -> None:
        from sqlalchemy.orm import Session
        from sqlalchemy.orm import sessionmaker

        self.postgresql_url = url
        self._conn = connectable
        self._handle = _handle
        self._restore_state = restore_state
        self._commit_helpers = _commit_helpers
        if _handle is not None and _handle.isolation == "transaction":
            # Session commits become savepoints of the test's transaction.
            self._sessionmaker: Any = sessionmaker(
                bind=connectable, join_transaction_mode="create_savepoint"
            )
        else:
            self._sessionmaker = sessionmaker(bind=connectable)
        self.session: Session = self._sessionmaker()
        self.time = SQLAlchemyFreezegun(connectable, _handle)
        self._own: Any = None  # a connection of our own on an engine, for the helpers

    # helpers run on the test's psycopg connection when it is the connectable's
    def _helper_conn(self) -> psycopg.Connection[Any]:
        if self._handle is not None and self._handle_is_connectable():
            return self._handle.conn
        from sqlalchemy.engine import Connection

        connection = self._conn if isinstance(self._conn, Connection) else self._own
        if connection is None:
            connection = self._own = self._conn.connect()
        driver: Any = connection.connection.driver_connection
        return driver  # type: ignore[no-any-return]

    def _handle_is_connectable(self) -> bool:
        engine = getattr(self._conn, "engine", self._conn)
        return bool(getattr(engine, "_pgsb_test_engine", False))

    def _helper_done(self) -> None:
        if self._commit_helpers or self._own is not None:
            self._helper_conn().commit()

    @property
    def id_quoter(self) -> Any:
        """SQLAlchemy's identifier preparer for this database (``quote``, ``quote_schema``)."""
        dialect = self._conn.dialect
        return dialect.identifier_preparer

    def is_dirty(self) -> bool:
        """Whether schemas, extensions, tables or columns differ from the template's."""
        if self._handle is None:
            raise NoSnapshotAvailableError()
        self.session.flush()
        return self._handle.is_dirty()

    def reset_db(self) -> None:
        """Put the database back as the test found it (frozen time is unfrozen too)."""
        self.time.unfreeze()
        self.rollback()
        if self._handle is None:
            raise NoSnapshotAvailableError()
        self._close_own()
        self._handle.reset_db()
        if self._handle.is_dirty():
            raise DatabaseIsDirtyError(
                "after the reset, the database's tables, schemas or extensions still differ "
                "from the template's"
            )

    def _close_own(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            with contextlib.suppress(Exception):
                own.close()

    def _close(self) -> None:
        self.time.unfreeze()
        self.session.close()
        self._close_own()

    @abc.abstractmethod
    def rollback(self) -> None:
        """Roll back the current transaction."""

    def __enter__(self) -> PostgreSQLTestDBBase:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    @classmethod
    def create_fixture(
        cls,
        name: str,
        engine_name: str = "pg_engine",
        use_restore_state: bool = True,
        **fixture_kwargs: Any,
    ) -> Any:
        """A fixture named ``name`` giving an instance of this class on the engine fixture
        ``engine_name``; ``fixture_kwargs`` go to ``pytest.fixture`` (``scope``...).
        ``use_restore_state`` is accepted for compatibility: isolation always restores."""

        @pytest.fixture(name=name, **fixture_kwargs)  # type: ignore[untyped-decorator]
        def _fixture(request: pytest.FixtureRequest) -> Iterator[PostgreSQLTestDBBase]:
            yield from cls.serve(request, engine_name)

        return _fixture

    @classmethod
    @abc.abstractmethod
    def serve(cls, request: pytest.FixtureRequest, engine_name: str) -> Iterator[Any]:
        """The fixture's body: yields the instance once, then cleans up."""


class PostgreSQLTestDB(PostgreSQLTestDBBase):
    """The ``postgresql_db`` fixture: an engine; commits allowed; everything put back after
    the test (reset isolation: rows, ALTERs, dropped tables, settings)."""

    def __init__(self, url: str, engine: Any, restore_state: Any = None, **kwargs: Any) -> None:
        super().__init__(url, engine, restore_state, **kwargs)
        self.engine = engine

    def rollback(self) -> None:
        self.session.rollback()

    @classmethod
    def serve(cls, request: pytest.FixtureRequest, engine_name: str) -> Iterator[Any]:
        """The fixture's body: the test's database under reset isolation, on the engine."""
        from pytest_pgsandbox._plugin import fixtures

        for handle in fixtures.database_for(request, "reset"):
            engine = request.getfixturevalue(engine_name)
            url = handle.info.url(driver="psycopg")
            with cls(url, engine, None, _handle=handle, _commit_helpers=True) as inst:
                yield inst


class TransactedPostgreSQLTestDB(PostgreSQLTestDBBase):
    """The ``transacted_postgresql_db`` fixture: a connection in a transaction that is rolled
    back after the test; commits through ``session`` are savepoints."""

    def __init__(self, url: str, connection: Any, restore_state: Any = None, **kwargs: Any) -> None:
        super().__init__(url, connection, restore_state, **kwargs)
        self.connection = connection

    def rollback(self) -> None:
        self.session.rollback()
        self.connection.rollback()

    @classmethod
    def serve(cls, request: pytest.FixtureRequest, engine_name: str) -> Iterator[Any]:
        """The fixture's body. The plugin's engine runs on the test's transaction; another
        engine connects to database_uri, which reset isolation puts back afterwards."""
        from pytest_pgsandbox._plugin import fixtures

        mode = "transaction" if engine_name == "pg_engine" else "reset"
        for handle in fixtures.database_for(request, mode):
            engine = request.getfixturevalue(engine_name)
            url = handle.info.url(driver="psycopg")
            with engine.connect() as connection:
                if mode == "reset":
                    connection.begin()
                try:
                    with cls(url, connection, None, _handle=handle) as inst:
                        yield inst
                finally:
                    with contextlib.suppress(Exception):
                        connection.rollback()


# -- engines (pytest_pgsql.ext) -------------------------------------------------------------


def create_engine_fixture(name: str, scope: str = "session", **engine_params: Any) -> Any:
    """A fixture named ``name`` giving a SQLAlchemy engine on ``database_uri`` made with
    ``engine_params`` (``json_serializer``, ``echo``...). Use it with ``create_fixture``:
    the database behind it is put back after every test that uses such a fixture.
    """
    if "url" in engine_params:
        raise TypeError("create_engine_fixture: the URL is database_uri's; it cannot be changed")

    @pytest.fixture(name=name, scope=scope)  # type: ignore[call-overload, untyped-decorator]
    def _engine_fixture(database_uri: str) -> Iterator[Any]:
        from pytest_pgsandbox._engine.drivers.sqla import require_sqlalchemy

        sa = require_sqlalchemy()
        # After DDL, reset isolation swaps the database for a fresh copy, which ends the
        # pool's connections: check each one before use.
        engine = sa.create_engine(database_uri, **{"pool_pre_ping": True, **engine_params})
        yield engine
        engine.dispose()

    return _engine_fixture
