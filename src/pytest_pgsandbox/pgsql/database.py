"""pytest-pgsql's databases (``pytest_pgsql.database``): ``PostgreSQLTestDB`` (the
``postgresql_db`` fixture), ``TransactedPostgreSQLTestDB`` (``transacted_postgresql_db``),
their base class and ``create_database_snapshot``.

The helpers raise SQLAlchemy's exceptions (``IntegrityError``, ``ProgrammingError``...), as
pytest-pgsql's did; ``run_sql_file`` returns a SQLAlchemy result.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING
from typing import Any

import pytest

from pytest_pgsandbox._engine.helpers import DatabaseHelpers
from pytest_pgsandbox._engine.helpers import PathOrFile
from pytest_pgsandbox.pgsql.errors import DatabaseIsDirtyError
from pytest_pgsandbox.pgsql.errors import NoSnapshotAvailableError
from pytest_pgsandbox.pgsql.time import SQLAlchemyFreezegun

if TYPE_CHECKING:
    import psycopg

    from pytest_pgsandbox._engine.handle import PgDatabase

__all__ = [
    "PostgreSQLTestDB",
    "PostgreSQLTestDBBase",
    "TransactedPostgreSQLTestDB",
    "create_database_snapshot",
]

_TABLES = (
    "SELECT schemaname AS schema_name, tablename AS table_name, "
    "(quote_ident(schemaname) || '.' || quote_ident(tablename))::regclass::oid AS table_oid "
    "FROM pg_tables"
)


def _rows(connectable: Any, query: str) -> list[dict[str, Any]]:
    from sqlalchemy import text

    if hasattr(connectable, "exec_driver_sql"):  # a Connection
        return [dict(r._mapping) for r in connectable.execute(text(query))]
    with connectable.connect() as connection:  # an Engine
        return [dict(r._mapping) for r in connection.execute(text(query))]


def create_database_snapshot(connectable: Any) -> dict[str, Any]:
    """The database's schemas, tables and extensions now (as pytest-pgsql's function):
    ``{"schemas": (...), "tables": [{"schema_name", "table_name", "table_oid"}...],
    "extensions": (...)}``. Give it to a database class as ``restore_state``."""
    return {
        "schemas": tuple(
            r["nspname"] for r in _rows(connectable, "SELECT nspname FROM pg_namespace")
        ),
        "tables": _rows(connectable, _TABLES),
        "extensions": tuple(
            r["extname"] for r in _rows(connectable, "SELECT extname FROM pg_extension")
        ),
    }


class PostgreSQLTestDBBase(DatabaseHelpers, metaclass=abc.ABCMeta):
    """What both database fixtures share: ``session``, ``postgresql_url``, ``time``, helpers.

    Made by the fixtures (which pass ``_handle``, the test's database), ``is_dirty`` and
    ``reset_db`` use the plugin's isolation. Made by hand on a SQLAlchemy engine or
    connection, they use ``restore_state`` (a ``create_database_snapshot``) as in
    pytest-pgsql: without one, ``reset_db`` only rolls back.
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
        handle = self._handle or self.time._handle
        if handle is not None and self._on_test_connection() and not self._on_psycopg2():
            return handle.conn
        from sqlalchemy.engine import Connection

        connection = self._conn if isinstance(self._conn, Connection) else self._own
        if connection is None:
            connection = self._own = self._conn.connect()
        driver: Any = connection.connection.driver_connection
        if self._on_psycopg2():
            # The helpers on the test's psycopg2 connection, in its transaction.
            from pytest_pgsandbox._engine.drivers.pg2 import HelperConnection

            cached = getattr(self, "_pg2_helper", None)
            if cached is None or cached.raw is not driver:
                cached = self._pg2_helper = HelperConnection(driver)
            driver = cached
        return driver  # type: ignore[no-any-return]

    def _on_psycopg2(self) -> bool:
        return bool(self._conn.dialect.driver == "psycopg2")

    def _sqlalchemy(self) -> Any:
        if not self._on_psycopg2():
            return super()._sqlalchemy()
        # A SQLAlchemy connection on the helper's psycopg2 connection, whose commits and
        # rollbacks are left to the helper's caller.
        from pytest_pgsandbox._engine.drivers.sqla import make_engine
        from pytest_pgsandbox._engine.helpers import _no_op

        raw = self._helper_conn().raw  # type: ignore[attr-defined]
        cached = getattr(self, "_pg2_engine", None)
        if cached is None or cached[0] is not raw:
            engine = make_engine(lambda: raw, "psycopg2")
            engine.dialect.do_commit = _no_op
            engine.dialect.do_rollback = _no_op
            cached = self._pg2_engine = (raw, engine)
        return cached[1].connect()

    def _on_test_connection(self) -> bool:
        """Whether the connectable is on ``pg_engine`` (its connection is the test's)."""
        engine = getattr(self._conn, "engine", self._conn)
        return bool(getattr(engine, "_pgsb_test_engine", False)) and (
            self._handle is not None or self.time._handle is not None
        )

    def _helper_done(self) -> None:
        if self._commit_helpers or self._own is not None:
            self._helper_conn().commit()

    def _database_error(self, exc: psycopg.Error, message: str | None = None) -> BaseException:
        """SQLAlchemy's exception for ``exc`` (``IntegrityError``...), as pytest-pgsql raised;
        its text is ours when we have a clearer one."""
        import psycopg
        from sqlalchemy import exc as sa_exc

        error = sa_exc.DBAPIError.instance(None, None, exc, psycopg.Error)
        if message is not None:
            error.args = (message,)
        return error

    @property
    def id_quoter(self) -> Any:
        """SQLAlchemy's identifier preparer for this database (``quote``, ``quote_schema``)."""
        dialect = self._conn.dialect
        return dialect.identifier_preparer

    def has_table(self, table: Any) -> bool:
        if not isinstance(table, str) and not hasattr(getattr(table, "__table__", table), "name"):
            raise TypeError(
                "Expected str, SQLAlchemy Table, or declarative model, got "
                f"{type(table).__name__!r}."
            )
        return super().has_table(table)

    def get_table(self, table: str, metadata: Any = None) -> Any:
        """A SQLAlchemy ``Table`` reflected from the database (``"schema.name"``, or a name
        on the search_path, ``pg_catalog``'s too, which SQLAlchemy 2 alone does not find)."""
        from pytest_pgsandbox._engine.helpers import split_name

        schema, name = split_name(table)
        if schema is None:
            found = self._scalar(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass(quote_ident(%s))",
                (name,),
            )
            if found == "pg_catalog":
                table = f"pg_catalog.{name}"
        return super().get_table(table, metadata)

    def run_sql_file(self, source: PathOrFile, **bindings: Any) -> Any:
        """Run the SQL in a file (several statements allowed); the SQLAlchemy result of the
        last one (``.scalar()``...). ``:name`` placeholders are bound to ``bindings``."""
        from pytest_pgsandbox._engine.helpers import _open_text

        with _open_text(source) as stream:
            text = stream.read()
        if bindings:
            from sqlalchemy import text as sa_text

            statement = sa_text(text).bindparams(**bindings)
            text = str(
                statement.compile(
                    dialect=self._conn.dialect, compile_kwargs={"literal_binds": True}
                )
            )
        import psycopg

        if self.time.is_frozen:  # the helpers' connection is not the hooked connectable
            from pytest_pgsandbox.pgsql.time import rewrite_frozen

            text = rewrite_frozen(text)
        connection = self._sqlalchemy().execution_options(no_parameters=True)
        try:
            result = connection.exec_driver_sql(text)  # as it is, % and all
        except Exception as exc:
            orig = getattr(exc, "orig", None)
            if isinstance(orig, psycopg.Error):
                raise self._database_error(orig) from None
            raise
        self._helper_done()
        return result

    # -- snapshots and cleanliness ---------------------------------------------------------

    def _snapshot_on(self) -> Any:
        return self._sqlalchemy()

    def is_dirty(self) -> bool:
        """Whether tables, schemas or extensions exist that the database had not at the
        start (the fixtures: the template's; by hand: ``restore_state``'s)."""
        if self._handle is not None:
            self.session.flush()
            return self._handle.is_dirty()
        if not self._restore_state:
            raise NoSnapshotAvailableError()
        now = create_database_snapshot(self._snapshot_on())
        before = self._restore_state
        oids = {t["table_oid"] for t in before["tables"]}
        return (
            bool(set(now["schemas"]) - set(before["schemas"]))
            or bool({t["table_oid"] for t in now["tables"]} - oids)
            or bool(set(now["extensions"]) - set(before["extensions"]))
        )

    def restore_to_snapshot(self) -> None:
        """Drop the extensions, schemas and tables that ``restore_state`` does not have.

        :raises NoSnapshotAvailableError: no ``restore_state`` was given.
        """
        if not self._restore_state:
            raise NoSnapshotAvailableError()
        from psycopg import sql

        before = self._restore_state
        now = create_database_snapshot(self._snapshot_on())
        for name in sorted(set(now["extensions"]) - set(before["extensions"])):
            self._run(sql.SQL("DROP EXTENSION IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        for name in sorted(set(now["schemas"]) - set(before["schemas"])):
            self._run(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        oids = {t["table_oid"] for t in before["tables"]}
        for table in create_database_snapshot(self._snapshot_on())["tables"]:
            if table["table_oid"] not in oids:
                self._run(
                    sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(
                        sql.Identifier(table["schema_name"], table["table_name"])
                    )
                )
        self._helper_conn().commit()

    def reset_db(self) -> None:
        """Put the database back as the test found it (frozen time is unfrozen too)."""
        self.time.unfreeze()
        self.rollback()
        if self._handle is None:
            if self._restore_state is not None:
                self.restore_to_snapshot()
            return
        self._close_own()
        self._handle.reset_db()
        if self._handle.is_dirty():
            raise DatabaseIsDirtyError(
                "after the reset, the database's tables, schemas or extensions still differ "
                "from the template's"
            )

    def _rollback_helpers(self) -> None:
        """Roll back what the helpers did on their psycopg connection (a failed statement
        leaves it unusable until then)."""
        if self._on_test_connection() or self._own is not None:
            with contextlib.suppress(Exception):
                self._helper_conn().rollback()

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
        from pytest_pgsandbox._plugin.sharing import DATABASE_FIXTURES
        from pytest_pgsandbox._plugin.sharing import RESET_FIXTURES

        DATABASE_FIXTURES.add(name)
        if cls.needs_reset:
            RESET_FIXTURES.add(name)

        @pytest.fixture(name=name, **fixture_kwargs)  # type: ignore[untyped-decorator]
        def _fixture(request: pytest.FixtureRequest) -> Iterator[PostgreSQLTestDBBase]:
            yield from cls.serve(request, engine_name)

        return _fixture

    needs_reset = False  # whether its database must take commits (see RESET_FIXTURES)

    @staticmethod
    def _name(request: pytest.FixtureRequest) -> str:
        return str(request.fixturename)

    @classmethod
    @abc.abstractmethod
    def serve(cls, request: pytest.FixtureRequest, engine_name: str) -> Iterator[Any]:
        """The fixture's body: yields the instance once, then cleans up."""


def _mode(request: pytest.FixtureRequest, wanted: str) -> str:
    """Reset isolation when any database fixture of the test needs it, so that all of them
    share one database (pytest-pgsql's ran on one too)."""
    from pytest_pgsandbox._plugin.sharing import RESET_FIXTURES

    if wanted == "transaction" and RESET_FIXTURES & set(request.fixturenames):
        return "reset"
    return wanted


class PostgreSQLTestDB(PostgreSQLTestDBBase):
    """The ``postgresql_db`` fixture: an engine; commits allowed; everything put back after
    the test (reset isolation: rows, ALTERs, dropped tables, settings)."""

    needs_reset = True

    def __init__(self, url: str, engine: Any, restore_state: Any = None, **kwargs: Any) -> None:
        super().__init__(url, engine, restore_state, **kwargs)
        self.engine = engine

    def rollback(self) -> None:
        self.session.rollback()
        self._rollback_helpers()

    @classmethod
    def serve(cls, request: pytest.FixtureRequest, engine_name: str) -> Iterator[Any]:
        """The fixture's body: the test's database under reset isolation, on the engine."""
        from pytest_pgsandbox._plugin import fixtures

        for handle in fixtures.database_for(
            request, "reset", request.fixturename or "postgresql_db"
        ):
            # The plugin's engine: the one whose connection is the test's (under every
            # isolation), as pytest-pgsql's fixtures expect of it.
            own = engine_name == "pg_engine"
            engine = request.getfixturevalue("_pg_test_engine" if own else engine_name)
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
        self._rollback_helpers()

    def reset_db(self) -> None:
        """Roll back; under transaction isolation, :class:`DatabaseIsDirtyError` if the test
        sent a real COMMIT (as pytest-pgsql). The database is still repaired after the test."""
        handle = self._handle
        if handle is not None and handle.isolation == "transaction" and handle.committed():
            self.time.unfreeze()
            with contextlib.suppress(Exception):
                self.rollback()
            handle.commit_reported = True
            raise DatabaseIsDirtyError(
                "the test sent a COMMIT as SQL, which ended the transaction that isolates it, "
                "so its changes were committed and a rollback cannot take them back. The "
                "database is rebuilt after the test so that later tests start clean; call "
                "connection.commit() instead (it is kept inside the test)."
            )
        super().reset_db()
        if handle is not None and self._on_test_connection():
            # The test's connection was restarted: this one follows it.
            self._rebind()

    def _rebind(self) -> None:
        """After ``reset_db()`` restarted the test's connection, a SQLAlchemy connection on
        the new one (the engine's connections are the test's)."""
        with contextlib.suppress(Exception):
            self.connection.close()
        self.connection = self._conn = self.connection.engine.connect()
        if self._handle is not None and self._handle.isolation == "reset":
            self.connection.begin()
        self.session.close()
        self.session.bind = self.connection
        self.time._connectable = self.connection

    @classmethod
    def serve(cls, request: pytest.FixtureRequest, engine_name: str) -> Iterator[Any]:
        """The fixture's body. The plugin's engine runs on the test's transaction; another
        engine connects to database_uri, which reset isolation puts back afterwards."""
        from pytest_pgsandbox._plugin import fixtures

        mode = _mode(request, "transaction" if engine_name == "pg_engine" else "reset")
        for handle in fixtures.database_for(
            request, mode, request.fixturename or "transacted_postgresql_db"
        ):
            # The plugin's engine: the one whose connection is the test's (under every
            # isolation), as pytest-pgsql's fixtures expect of it.
            own = engine_name == "pg_engine"
            engine = request.getfixturevalue("_pg_test_engine" if own else engine_name)
            url = handle.info.url(driver="psycopg")
            connection = engine.connect()
            if handle.isolation == "reset":
                connection.begin()
            inst = cls(url, connection, None, _handle=handle)
            try:
                with inst:
                    yield inst
            finally:
                with contextlib.suppress(Exception):
                    inst.connection.rollback()
                with contextlib.suppress(Exception):
                    inst.connection.close()
