"""The per-test database handle behind the ``pg`` fixture."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

from pytest_pgsandbox._engine.helpers import DatabaseHelpers
from pytest_pgsandbox._engine.urls import ConnInfo

if TYPE_CHECKING:  # psycopg is imported when a test first needs a database, not before
    from typing import TypeAlias

    import psycopg
    from psycopg import sql
    from psycopg.abc import Params

    from pytest_pgsandbox._engine.clock.freezing import FrozenTime
    from pytest_pgsandbox._engine.clock.freezing import When

    Query: TypeAlias = str | bytes | sql.SQL | sql.Composed


class PgDatabase(DatabaseHelpers):
    """This test's database.

    - ``url``: a libpq URL of the database (``postgresql+psycopg`` + the rest for SQLAlchemy),
      for any code, connection or process (clone and reset isolation; under transaction
      isolation other connections cannot see the test's data, so asking for it is an error).
    - ``conn``: a psycopg 3 connection inside the test's isolation; ``commit()`` and
      ``rollback()`` are safe to call.
    - ``isolation``: how the test is isolated (transaction, clone or reset).
    - ``execute``/``fetchone``/``fetchall``/``fetchval``: run a query on ``conn``.
    - ``freeze_time(when)``: Python's clock and the database's, frozen together.
    - helpers: ``install_extension``, ``create_schema``, ``create_table``, ``load_csv``,
      ``run_sql_file``, ``is_dirty``, ``reset_db`` and the rest of pytest-pgsql's.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any] | Callable[[], psycopg.Connection[Any]],
        info: ConnInfo,
        isolation: str = "transaction",
        restart: Callable[[], psycopg.Connection[Any]] | None = None,
        baseline: Callable[[], str] | None = None,
        admin: ConnInfo | None = None,
        local_role: str = "",
        committed: Callable[[], bool] | None = None,
    ) -> None:
        # A callable: the connection is opened (its transaction begun) when first used. Tests
        # that only use another driver's connection (the async fixtures) do not pay for it.
        self._conn: psycopg.Connection[Any] | None = None
        self._open: Callable[[], psycopg.Connection[Any]] | None = None
        if callable(conn):
            self._open = conn
        else:
            self._conn = conn
        # Whether a COMMIT sent as SQL ended the test's transaction (transaction isolation),
        # and whether the test was told so already (then its end only repairs, quietly).
        self._committed = committed
        self.commit_reported = False
        self.info = info
        # pgsandbox's own connections (the clock's, the isolated async ones): a superuser's,
        # when tests run as a role; those then act as the role with ``local_role``
        # ("SET LOCAL ROLE ...; ", sent first in their outer transaction).
        self.admin_info = admin or info
        self.local_role = local_role
        self.isolation = isolation
        self._restart = restart
        self._baseline = baseline
        self._time: FrozenTime | None = None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            assert self._open is not None
            self._conn = self._open()
        return self._conn

    @conn.setter
    def conn(self, value: psycopg.Connection[Any]) -> None:
        self._conn = value

    @property
    def conn_used(self) -> bool:
        """Whether ``conn`` was opened (always, unless it opens when first used)."""
        return self._conn is not None

    # -- time ------------------------------------------------------------------------------

    @property
    def time(self) -> FrozenTime:
        """This test's clock: ``freeze(when)``, ``tick(delta)``, ``move_to(when)``,
        ``unfreeze()``; a context manager too. Unfrozen when the test ends."""
        if self._time is None:
            from pytest_pgsandbox._engine.clock.freezing import FrozenTime

            self._time = FrozenTime(self.admin_info, self.conn)
        return self._time

    def freeze_time(self, when: When = None, tick: bool = False) -> FrozenTime:
        """Freeze Python's clock and the database's at ``when`` (default: now).

        The database's ``now()`` (and ``CURRENT_TIMESTAMP`` in queries sent on ``conn``),
        column defaults and triggers written with ``now()``, and, under clone and reset
        isolation, every other connection to the test's database see the frozen time.
        Returns the clock: use it as a context manager, or call ``tick()``/``unfreeze()``.
        """
        return self.time.freeze(when, tick=tick)

    def close_time(self) -> None:
        """Unfreeze both clocks (the fixture does this when the test ends)."""
        if self._time is not None:
            self._time.unfreeze()

    # -- state -------------------------------------------------------------------------------

    def driver_target(self) -> tuple[ConnInfo, bool, str]:
        """Where another driver's connection for this test goes: (info, isolated, set_role).

        Under transaction isolation, a superuser's connection in an outer transaction (it may
        put sequences back) acting as the role, if any; else the test's own URL.
        """
        if self.isolation == "transaction":
            return self.admin_info, True, self.local_role
        return self.info, False, ""

    def is_dirty(self) -> bool:
        """Whether the database's schemas, extensions, tables or columns differ from the
        template's (what DDL changes; rows are not compared)."""
        from pytest_pgsandbox._engine.isolation.verify import catalog_digest
        from pytest_pgsandbox.errors import PgSandboxError

        if self._baseline is None:
            raise PgSandboxError(
                "is_dirty() needs the template's catalog, which this "
                "database handle was made without"
            )
        return catalog_digest(self.conn) != self._baseline()

    def committed(self) -> bool:
        """Whether the test's changes were committed for real by a COMMIT sent as SQL,
        which ended the transaction isolating it (transaction isolation only)."""
        return self._committed is not None and self._committed()

    def reset_db(self) -> None:
        """Put the database back as the test found it, now, in the middle of the test
        (transaction and reset isolation). Frozen time is unfrozen."""
        from pytest_pgsandbox.errors import PgSandboxError

        self.close_time()
        if self._restart is None:
            raise PgSandboxError(
                f"reset_db() under {self.isolation} isolation: a test's own copy cannot be "
                "replaced while it runs, since code may hold its URL. Use transaction or "
                'reset isolation for this test (@pytest.mark.pg(isolation="reset")).'
            )
        self.conn = self._restart()
        self._time = None  # the next clock is on the new connection

    def _helper_conn(self) -> psycopg.Connection[Any]:
        return self.conn

    @property
    def url(self) -> str:
        if self.isolation == "transaction":
            from pytest_pgsandbox.errors import PgSandboxError

            raise PgSandboxError(
                "pg.url under transaction isolation: the test's rows live in a transaction "
                "that is never committed, so a connection opened on pg.url would not see "
                "them, and its commits would outlive the test. Give the test a database that "
                'any connection may use: @pytest.mark.pg(isolation="reset") (fast) or '
                '"clone", or set isolation in the configuration. To stay in the transaction, '
                "use pg.conn, pg_engine or pg_session instead."
            )
        return self.info.url()

    @property
    def dbname(self) -> str:
        return self.info.dbname

    def execute(self, query: Query, params: Params | None = None) -> psycopg.Cursor[Any]:
        """Run ``query`` (with ``%s``/``%(name)s`` placeholders) and return the cursor."""
        return self.conn.execute(query, params)

    def fetchone(self, query: Query, params: Params | None = None) -> Any:
        """The first row of ``query``, or None."""
        return self.conn.execute(query, params).fetchone()

    def fetchall(self, query: Query, params: Params | None = None) -> list[Any]:
        """All rows of ``query``."""
        return self.conn.execute(query, params).fetchall()

    def fetchval(self, query: Query, params: Params | None = None) -> Any:
        """The first column of the first row of ``query``, or None if there is no row."""
        row = self.conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    def __repr__(self) -> str:
        return f"<PgDatabase {self.info.url(masked=True)} isolation={self.isolation}>"
