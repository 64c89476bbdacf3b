"""The per-test database handle behind the ``pg`` fixture."""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from pytest_pgsandbox._engine.urls import ConnInfo

if TYPE_CHECKING:  # psycopg is imported when a test first needs a database, not before
    from typing import TypeAlias

    import psycopg
    from psycopg import sql
    from psycopg.abc import Params

    Query: TypeAlias = str | bytes | sql.SQL | sql.Composed


class PgDatabase:
    """This test's database.

    - ``url``: a libpq URL of the database (``postgresql+psycopg`` + the rest for SQLAlchemy),
      for any code, connection or process (clone and reset isolation; under transaction
      isolation other connections cannot see the test's data, so asking for it is an error).
    - ``conn``: a psycopg 3 connection inside the test's isolation; ``commit()`` and
      ``rollback()`` are safe to call.
    - ``isolation``: how the test is isolated (transaction, clone or reset).
    - ``execute``/``fetchone``/``fetchall``/``fetchval``: run a query on ``conn``.
    """

    def __init__(
        self, conn: psycopg.Connection[Any], info: ConnInfo, isolation: str = "transaction"
    ) -> None:
        self.conn = conn
        self.info = info
        self.isolation = isolation

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
