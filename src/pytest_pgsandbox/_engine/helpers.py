"""Database helpers shared by ``pg`` and the pytest-pgsql compatible fixtures.

Extensions, schemas, tables, CSV loading and SQL files, on a psycopg 3 connection. Every
identifier is quoted by psycopg (``sql.Identifier``), every value is a bound parameter; a
name such as ``x; DROP TABLE users`` is just an odd name that does not exist.
"""

from __future__ import annotations

import csv
import io
import os
import re
from typing import IO
from typing import TYPE_CHECKING
from typing import Any

from pytest_pgsandbox.errors import PgSandboxError

if TYPE_CHECKING:  # psycopg is imported when a test first needs a database, not before
    import psycopg
    from psycopg import sql

PathOrFile = str | os.PathLike[str] | IO[str]


# The catalog a reset cannot take back without a fresh copy: what is_dirty() compares.
def split_name(name: str) -> tuple[str | None, str]:
    """``"schema.table"`` -> ("schema", "table"); ``"table"`` -> (None, "table")."""
    schema, dot, table = name.partition(".")
    return (schema, table) if dot else (None, name)


def table_name(table: Any) -> tuple[str | None, str]:
    """(schema, name) of a name, ``"schema.name"``, SQLAlchemy ``Table`` or ORM model."""
    if isinstance(table, str):
        return split_name(table)
    target = getattr(table, "__table__", table)
    name = getattr(target, "name", None)
    if not isinstance(name, str):
        raise TypeError(
            f"expected a table name, a SQLAlchemy Table or a declarative model, got "
            f"{type(table).__name__}"
        )
    schema = getattr(target, "schema", None)
    return (schema if isinstance(schema, str) else None), name


def qualified(schema: str | None, name: str) -> sql.Composable:
    from psycopg import sql

    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


class DatabaseHelpers:
    """Helpers on ``self._helper_conn()``; ``self._helper_done()`` runs after each change
    (a commit where other connections must see it, nothing inside a test's transaction)."""

    def _helper_conn(self) -> psycopg.Connection[Any]:
        raise NotImplementedError

    def _helper_done(self) -> None:
        return None

    def _database_error(self, exc: psycopg.Error, message: str | None = None) -> BaseException:
        """The exception a helper raises for the driver's error ``exc``: ``message`` (ours,
        when we have a clearer one) as a PgSandboxError, else ``exc`` itself."""
        return exc if message is None else PgSandboxError(message)

    def _run(self, query: Any, params: Any = None) -> psycopg.Cursor[Any]:
        """``query`` on the helper's connection; a driver error as ``_database_error`` says."""
        import psycopg

        try:
            return self._helper_conn().execute(query, params)
        except psycopg.Error as exc:
            error = self._database_error(exc)
            if error is exc:
                raise
        raise error from None

    def _scalar(self, query: str, params: Any = None) -> Any:
        row = self._run(query, params).fetchone()
        return None if row is None else row[0]

    # -- extensions ---------------------------------------------------------------------

    def is_extension_available(self, name: str) -> bool:
        """Whether the server can create extension ``name``."""
        return bool(
            self._scalar(
                "SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = %s)", (name,)
            )
        )

    def has_extension(self, name: str) -> bool:
        """Whether extension ``name`` is created in this database."""
        return bool(
            self._scalar("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = %s)", (name,))
        )

    def install_extension(
        self,
        name: str,
        if_available: bool = False,
        exists_ok: bool = False,
        schema: str | None = None,
    ) -> bool:
        """CREATE EXTENSION ``name``; False if ``if_available`` and the server lacks it.

        For every test, prefer the ``extensions`` setting: created once, in the template.
        """
        from psycopg import sql

        if if_available and not self.is_extension_available(name):
            return False
        query = sql.SQL("CREATE EXTENSION {}{}").format(
            sql.SQL("IF NOT EXISTS " if exists_ok else ""), sql.Identifier(name)
        )
        if schema:
            query += sql.SQL(" WITH SCHEMA {}").format(sql.Identifier(schema))
        self._run(query)
        self._helper_done()
        return True

    # -- schemas and tables ---------------------------------------------------------------

    def has_schema(self, name: str) -> bool:
        return bool(
            self._scalar("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", (name,))
        )

    def create_schema(self, *names: str, exists_ok: bool = False) -> None:
        """CREATE SCHEMA for each name (``exists_ok``: IF NOT EXISTS)."""
        from psycopg import sql

        check = sql.SQL("IF NOT EXISTS " if exists_ok else "")
        for name in names:
            self._run(sql.SQL("CREATE SCHEMA {}{}").format(check, sql.Identifier(name)))
        self._helper_done()

    def has_table(self, table: Any) -> bool:
        """Whether a table exists: a name (any schema), ``"schema.name"``, a ``Table`` or a
        model. Views, foreign and temporary tables do not count (as in pytest-pgsql)."""
        schema, name = table_name(table)
        query = (
            "SELECT EXISTS (SELECT FROM pg_tables WHERE tablename = %s "
            "AND (%s::text IS NULL OR schemaname = %s))"
        )
        return bool(self._scalar(query, (name, schema, schema)))

    def create_table(self, *tables: Any) -> None:
        """Create SQLAlchemy ``Table``s or models (with their indexes and types), and the
        schemas they are in when missing."""
        from psycopg import sql
        from sqlalchemy import Table

        targets = []
        for table in tables:
            target = getattr(table, "__table__", table)
            if not isinstance(target, Table):
                raise TypeError(
                    f"create_table() takes SQLAlchemy Tables or declarative models, got "
                    f"{type(table).__name__}"
                )
            targets.append(target)
        with self._sqlalchemy() as connection:
            for target in targets:
                if target.schema:
                    self._run(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(target.schema)
                        )
                    )
                target.create(connection)
        self._helper_done()

    def get_table(self, table: str, metadata: Any = None) -> Any:
        """A SQLAlchemy ``Table`` reflected from the database (``"schema.name"`` or a name
        on the search_path)."""
        from sqlalchemy import MetaData
        from sqlalchemy import Table

        schema, name = split_name(table)
        with self._sqlalchemy() as connection:
            return Table(
                name,
                metadata if metadata is not None else MetaData(),
                schema=schema,
                autoload_with=connection,
            )

    def _sqlalchemy(self) -> Any:
        """A SQLAlchemy connection on the helper's psycopg connection.

        Its commits and rollbacks do nothing: the work stays in the psycopg connection's
        transaction, which the helper's caller owns.
        """
        from pytest_pgsandbox._engine.drivers.sqla import make_engine

        conn = self._helper_conn()
        cached = getattr(self, "_pgsb_helper_engine", None)
        if cached is None or cached[0] is not conn:
            engine = make_engine(lambda: conn)
            engine.dialect.do_commit = _no_op
            engine.dialect.do_rollback = _no_op
            cached = (conn, engine)
            self._pgsb_helper_engine = cached
        return cached[1].connect()

    # -- data ------------------------------------------------------------------------------

    def load_csv(
        self,
        source: PathOrFile,
        table: Any,
        dialect: str | type[csv.Dialect] | csv.Dialect = "excel",
        truncate: bool = False,
        cascade: bool = False,
    ) -> int:
        """Load a CSV file (first line: column names) into ``table`` with COPY; the number of
        rows loaded. As PostgreSQL reads CSV, an unquoted empty field is NULL and ``""`` an
        empty string. ``truncate`` empties the table first (and restarts its identity
        columns), ``cascade`` also the tables that reference it."""
        import psycopg
        from psycopg import sql

        schema, name = table_name(table)
        target = qualified(schema, name)
        dialect_ = csv.get_dialect(dialect) if isinstance(dialect, str) else dialect
        label = _label(source)
        conn = self._helper_conn()
        with _open_text(source) as stream:
            header_line = stream.readline()
            header = next(csv.reader([header_line], dialect=dialect_), None)
            if not header:
                raise PgSandboxError(
                    f"load_csv({label}): the file is empty; its first line must name the columns"
                )
            options: list[sql.Composable] = [sql.SQL("FORMAT csv"), sql.SQL("HEADER true")]
            options.append(sql.SQL("DELIMITER {}").format(sql.Literal(dialect_.delimiter)))
            if dialect_.quotechar:
                options.append(sql.SQL("QUOTE {}").format(sql.Literal(dialect_.quotechar)))
            if not dialect_.doublequote and dialect_.escapechar:
                options.append(sql.SQL("ESCAPE {}").format(sql.Literal(dialect_.escapechar)))
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(
                target,
                sql.SQL(", ").join(sql.Identifier(c.strip()) for c in header),
                sql.SQL(", ").join(options),
            )
            step = "copy"
            error: BaseException | None = None
            try:
                with conn.transaction():
                    if truncate:
                        step = "truncate"
                        conn.execute(
                            sql.SQL("TRUNCATE TABLE ONLY {} RESTART IDENTITY{}").format(
                                target, sql.SQL(" CASCADE" if cascade else "")
                            )
                        )
                        step = "copy"
                    cur = conn.cursor()
                    with cur.copy(copy_sql) as copy:
                        copy.write(header_line)
                        for chunk in iter(lambda: stream.read(1 << 16), ""):
                            copy.write(chunk)
                    loaded = cur.rowcount
            except psycopg.Error as exc:
                if step == "truncate":
                    message = _truncate_error(label, name, exc, cascade)
                else:
                    message = _copy_error(label, name, exc)
                error = self._database_error(exc, message)
            if error is not None:
                raise error from None
        self._helper_done()
        return int(loaded)

    def run_sql_file(self, source: PathOrFile, **bindings: Any) -> psycopg.Cursor[Any]:
        """Run the SQL in a file (several statements allowed). With ``bindings``, ``:name``
        placeholders in it are bound to their values (as SQLAlchemy's ``text()`` does)."""
        import psycopg

        with _open_text(source) as stream:
            text = stream.read()
        conn = self._helper_conn()
        if not bindings:
            cur = conn.execute(text.encode())  # no parameters: run as it is, % and all
        else:
            from sqlalchemy import text as sa_text
            from sqlalchemy.dialects import postgresql

            compiled = (
                sa_text(text)
                .bindparams(**bindings)
                .compile(
                    dialect=postgresql.dialect()  # type: ignore[no-untyped-call]
                )
            )
            cur = psycopg.ClientCursor(conn)  # client-side binding: many statements allowed
            cur.execute(str(compiled), compiled.params)
        self._helper_done()
        return cur


def _label(source: PathOrFile) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<file>"))


class _open_text:
    def __init__(self, source: PathOrFile) -> None:
        self.source = source
        self.opened: IO[str] | None = None

    def __enter__(self) -> IO[str]:
        if isinstance(self.source, (str, os.PathLike)):
            self.opened = open(self.source, encoding="utf-8", newline="")
            return self.opened
        if isinstance(self.source.read(0), bytes):
            binary: Any = self.source
            return io.TextIOWrapper(binary, encoding="utf-8", newline="")
        return self.source

    def __exit__(self, *exc: object) -> None:
        if self.opened is not None:
            self.opened.close()


_COPY_LINE = re.compile(r"line (\d+)(?:, column (\S+?))?:?(?: \"(.*)\")?$", re.MULTILINE)


def _copy_error(label: str, table: str, exc: psycopg.Error) -> str:
    """COPY's error, with the CSV file's line (COPY counts the header as line 1, as the
    file does)."""
    message = (exc.diag.message_primary or str(exc)).strip()
    context = exc.diag.context or ""
    found = _COPY_LINE.search(context)
    where = f"{label}, line {found.group(1)}" if found else label
    if found and found.group(2):
        where += f", column {found.group(2)}"
    return (
        f"load_csv: {where}: {message} (loading into {table}; nothing was loaded). Fix that "
        "line of the file, or the table's definition."
    )


def _truncate_error(label: str, table: str, exc: psycopg.Error, cascade: bool) -> str:
    message = (exc.diag.message_primary or str(exc)).strip()
    hint = "" if cascade else " Pass cascade=True to empty the tables that refer to it too."
    return (
        f"load_csv({label}): emptying {table} first (truncate=True) failed: {message}; "
        f"nothing was loaded.{hint}"
    )


def _no_op(dbapi_connection: Any) -> None:
    return None
