"""Reset isolation: one database per worker, put back after each test where it changed.

The database is a copy of the template with a little bookkeeping added in a schema of its own,
``_pgsandbox`` (the *reset template*, made once per session):

- every table has a statement-level trigger that records the table in ``_pgsandbox.touched``
  when a statement writes to it (INSERT, UPDATE, DELETE, TRUNCATE, on any connection, foreign
  key actions included);
- an event trigger records any DDL (CREATE, ALTER, DROP, GRANT, ...) as relation 0;
- ``_pgsandbox.b<oid>`` tables hold the template's rows of every table that has some, and
  ``_pgsandbox.sequences`` the template's sequence positions.

After a test, ``_pgsandbox.reset()`` ends the transactions other connections left open, then
puts back the touched tables only (with triggers and foreign keys off, so order does not
matter) and the sequences that moved: one round trip. A table that only had rows added loses
just those (rows whose ``xmin`` is newer than ``_pgsandbox.mark``), so its size does not count;
one whose rows were updated, deleted or truncated gets all of the template's rows again. After DDL
the database cannot be restored that way, so it is swapped for a fresh copy of the reset
template, prepared in the background, under the same name.

Connections that are idle at the end of a test (an application's pool) survive a reset; a swap
ends them.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pytest_pgsandbox._engine import provision
from pytest_pgsandbox._engine.clone import ClonePool
from pytest_pgsandbox._engine.isolation import _batch
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import ServerError

SCHEMA = "_pgsandbox"
# This transaction's id as an xid (txid_current() carries the epoch in its high bits).
NOW_XID = "(txid_current() % 4294967296)::text::xid"
DDL = 0  # the "relation" recorded for DDL

_SETUP = """
CREATE SCHEMA _pgsandbox;
COMMENT ON SCHEMA _pgsandbox IS 'pgsandbox: what tests wrote, and the rows to put back';
-- changed: a statement other than INSERT (UPDATE, DELETE, TRUNCATE; an upsert fires both).
CREATE UNLOGGED TABLE _pgsandbox.touched (relid oid NOT NULL, changed bool NOT NULL DEFAULT true);
CREATE TABLE _pgsandbox.leaves (relid oid NOT NULL, leaf oid NOT NULL);
-- statements: put every row back; inserted: delete only rows newer than the mark (NULL when
-- the template's table is empty: then both are the same).
CREATE TABLE _pgsandbox.restore (relid oid PRIMARY KEY, statements text NOT NULL, inserted text);
-- A transaction id no older than any row the template's tables hold: rows whose xmin is
-- newer were written since.
CREATE TABLE _pgsandbox.mark (at xid NOT NULL);
CREATE TABLE _pgsandbox.settings (config text[]);
CREATE TABLE _pgsandbox.sequences (seq regclass PRIMARY KEY, last_value bigint, start bigint);

CREATE FUNCTION _pgsandbox.wrote() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    -- No unique index: concurrent writers must never wait on each other here.
    IF NOT EXISTS (SELECT FROM _pgsandbox.touched t
                   WHERE t.relid = TG_RELID AND t.changed = (TG_OP <> 'INSERT')) THEN
        INSERT INTO _pgsandbox.touched VALUES (TG_RELID, TG_OP <> 'INSERT');
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION _pgsandbox.ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM _pgsandbox.touched WHERE relid = 0) THEN
        INSERT INTO _pgsandbox.touched VALUES (0);
    END IF;
END $$;
"""

# Tables of the user's schema: ordinary and partitioned, outside the system's schemas and ours.
_TABLES = """
SELECT c.oid, c.relkind::text, format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_pgsandbox')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY c.oid
"""

# A table and every table below it (inheritance and partitions): a statement on the parent
# fires only the parent's statement triggers but may change every child.
_LEAVES = """
WITH RECURSIVE below(relid, leaf) AS (
    SELECT oid, oid FROM pg_class WHERE oid = ANY(%(oids)s)
    UNION
    SELECT b.relid, i.inhrelid FROM below b JOIN pg_inherits i ON i.inhparent = b.leaf
)
SELECT b.relid, b.leaf FROM below b JOIN pg_class c ON c.oid = b.leaf WHERE c.relkind = 'r'
"""

_COLUMNS = """
SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
"""

_RESET = """
CREATE FUNCTION _pgsandbox.reset(wait_ms int) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    r record;
    wrote oid[];
    changed oid[];
    mark xid := (SELECT m.at FROM _pgsandbox.mark m);
    rewritten bool := false;
    n int := 0;
    db oid := (SELECT oid FROM pg_database WHERE datname = current_database());
BEGIN
    -- Work other connections have not committed must not land after the restore. (The
    -- function, not the pg_stat_activity view: the view costs half a millisecond more.)
    PERFORM {terminate}
    FROM pg_stat_get_activity(NULL) a
    WHERE a.datid = db
      AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
      AND a.state IS DISTINCT FROM 'idle';
    -- ALTER DATABASE/ROLE ... SET fires no event trigger: compare the settings themselves.
    IF (SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = db AND s.setrole = 0)
           IS DISTINCT FROM (SELECT c.config FROM _pgsandbox.settings c)
       OR EXISTS (SELECT FROM pg_db_role_setting s WHERE s.setdatabase = db AND s.setrole <> 0)
    THEN
        RETURN 'ddl';
    END IF;
    SELECT array_agg(DISTINCT t.relid),
           coalesce(array_agg(DISTINCT t.relid) FILTER (WHERE t.changed), '{}')
    INTO wrote, changed FROM _pgsandbox.touched t;
    IF wrote IS NOT NULL THEN
        IF 0 = ANY(wrote) THEN
            RETURN 'ddl';
        END IF;
        PERFORM set_config('session_replication_role', 'replica', true);
        FOR r IN
            SELECT s.statements, s.inserted,
                   s.relid IN (SELECT l.leaf FROM _pgsandbox.leaves l
                               WHERE l.relid = ANY(changed)) AS rows_changed
            FROM _pgsandbox.restore s
            WHERE s.relid IN (SELECT l.leaf FROM _pgsandbox.leaves l WHERE l.relid = ANY(wrote))
        LOOP
            -- Rows only added: delete just those, whatever the table's size.
            IF r.inserted IS NOT NULL AND NOT r.rows_changed THEN
                EXECUTE r.inserted USING mark;
            ELSE
                EXECUTE r.statements;
                rewritten := true;
            END IF;
            n := n + 1;
        END LOOP;
        DELETE FROM _pgsandbox.touched;
        IF rewritten THEN  -- rows put back now belong to the template's
            UPDATE _pgsandbox.mark SET at = {now_xid};
        END IF;
    END IF;
    PERFORM setval(s.seq, coalesce(s.last_value, s.start), s.last_value IS NOT NULL)
    FROM _pgsandbox.sequences s
    WHERE pg_sequence_last_value(s.seq) IS DISTINCT FROM s.last_value;
    RETURN n::text;
END $$;
"""


def instrument(conn: psycopg.Connection[Any]) -> int:
    """Add the bookkeeping to the database ``conn`` is on; returns how many tables it watches.

    ``conn`` must be a superuser's: event triggers and turning triggers off need one.
    """
    if not _is_superuser(conn):
        raise ServerError(
            f'isolation="reset" needs a superuser on the test server (event triggers record '
            f"DDL, and the restore turns triggers off), and {conn.info.user!r} is not one. "
            'Use isolation="clone" or "transaction", or connect as a superuser.'
        )
    major = conn.info.server_version // 10000
    terminate = "pg_terminate_backend(pid, wait_ms)" if major >= 14 else "pg_terminate_backend(pid)"
    with conn.transaction():
        conn.execute(_SETUP)
        tables = conn.execute(_TABLES).fetchall()
        for _oid, _kind, name in tables:
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER _pgsandbox_wrote AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                    "ON {} FOR EACH STATEMENT EXECUTE FUNCTION _pgsandbox.wrote()"
                ).format(sql.SQL(name))
            )
        oids = [oid for oid, _, _ in tables]
        conn.execute(
            "INSERT INTO _pgsandbox.leaves " + _LEAVES,
            {"oids": oids},
        )
        for oid, kind, name in tables:
            if kind != "r":
                continue
            table = sql.SQL(name)  # quoted by format('%I.%I') in the catalog query
            columns = conn.execute(_COLUMNS, (oid,)).fetchone()
            statements = sql.SQL("DELETE FROM ONLY {};").format(table)
            inserted = None
            has_rows = conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM ONLY {})").format(table))
            if columns and columns[0] and (has_rows.fetchone() or (False,))[0]:
                cols = sql.SQL(columns[0])  # quoted by quote_ident() in the query
                copy = sql.Identifier(SCHEMA, f"b{oid}")
                conn.execute(
                    sql.SQL("CREATE TABLE {} AS SELECT {} FROM ONLY {}").format(copy, cols, table)
                )
                statements += sql.SQL(
                    " INSERT INTO {table} ({cols}) OVERRIDING SYSTEM VALUE"
                    " SELECT {cols} FROM {copy};"
                ).format(table=table, cols=cols, copy=copy)
                # Both ages in one statement: measured from the same point.
                inserted = sql.SQL("DELETE FROM ONLY {} WHERE age(xmin) < age($1)").format(table)
            conn.execute(
                "INSERT INTO _pgsandbox.restore VALUES (%s, %s, %s)",
                (oid, statements.as_string(conn), inserted and inserted.as_string(conn)),
            )
        conn.execute(
            "INSERT INTO _pgsandbox.sequences "
            "SELECT c.oid, pg_sequence_last_value(c.oid), s.seqstart "
            "FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'S' AND n.nspname NOT LIKE 'pg\\_temp%'"
        )
        conn.execute(
            "INSERT INTO _pgsandbox.settings SELECT (SELECT s.setconfig FROM pg_db_role_setting s "
            "JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = current_database() AND s.setrole = 0)"
        )
        conn.execute(
            "INSERT INTO _pgsandbox.mark VALUES ((txid_current() % 4294967296)::text::xid)"
        )
        conn.execute(_RESET.replace("{terminate}", terminate).replace("{now_xid}", NOW_XID))
        conn.execute(
            "CREATE EVENT TRIGGER _pgsandbox_ddl ON ddl_command_end "
            "EXECUTE FUNCTION _pgsandbox.ddl()"
        )
        conn.execute(
            "CREATE EVENT TRIGGER _pgsandbox_drop ON sql_drop EXECUTE FUNCTION _pgsandbox.ddl()"
        )
    return len(tables)


def _is_superuser(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def make_reset_template(
    admin: ConnInfo, template: str | None, name: str, label: dict[str, object], timeout: float
) -> None:
    """Copy ``template`` to ``name``, instrument it, and mark it a template."""
    with connect(admin, timeout=timeout) as conn:
        provision.create_database(conn, name, label, template)
        try:
            with connect(admin.for_db(name), timeout=timeout, autocommit=False) as db:
                instrument(db)
            conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(name)))
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                provision.drop_database(conn, name)
            raise


class ResetDatabase:
    """The worker's database under reset isolation, and its connection for the tests."""

    WAIT_MS = 5000

    def __init__(self, admin: ConnInfo, pool: ClonePool, name: str, timeout: float) -> None:
        self.admin = admin
        self.pool = pool
        self.name = name
        self.timeout = timeout
        self.info = admin.for_db(name)
        self.conn: psycopg.Connection[Any] | None = None
        self.swaps = 0
        self._swap_in()

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.info.conninfo(), connect_timeout=max(1, round(self.timeout)))

    def begin(self) -> psycopg.Connection[Any]:
        """The connection for the next test (the same one while it stays usable)."""
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = self._connect()
        return self.conn

    def end(self) -> str:
        """Put the database back as the template has it. Returns "reset" or "swapped"."""
        conn = self.conn
        if conn is None or conn.closed or conn.broken:
            self.conn = conn = self._connect()
        rollback = "" if conn.info.transaction_status == TransactionStatus.IDLE else "ROLLBACK; "
        try:
            result = _batch(
                conn,
                f"{rollback}RESET ALL; RESET ROLE; SELECT pg_advisory_unlock_all(); "
                f"SELECT {SCHEMA}.reset({self.WAIT_MS:d})",
            )
        except psycopg.Error as exc:
            self.swap()  # whatever went wrong, the next test gets a clean copy
            raise ServerError(
                f"could not restore the tables the test wrote to ({str(exc).strip()}); the "
                "database was replaced by a fresh copy of the template."
            ) from None
        if result != "ddl":
            return "reset"
        self.swap()
        return "swapped"

    def swap(self, keep_as: str | None = None) -> None:
        """Replace the database with a fresh copy under the same name.

        ``keep_as``: rename the old one to that instead of dropping it.
        """
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None
        with connect(self.admin, timeout=self.timeout) as admin:
            if keep_as is None:
                provision.drop_database(admin, self.name)
            else:
                _end_sessions(admin, self.name)
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(self.name), sql.Identifier(keep_as)
                    )
                )
        self.swaps += 1
        self._swap_in()

    def _swap_in(self) -> None:
        fresh = self.pool.take()
        with connect(self.admin, timeout=self.timeout) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(fresh.dbname), sql.Identifier(self.name)
                )
            )

    def close(self, drop: bool = True) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None
        if drop:
            with connect(self.admin, timeout=self.timeout) as admin:
                provision.drop_database(admin, self.name)


def _end_sessions(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
