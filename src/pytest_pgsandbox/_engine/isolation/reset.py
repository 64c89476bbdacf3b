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

A role that is not a superuser may neither make event triggers nor turn foreign keys off, so
for one the database is watched and put back another way (:mod:`.reset_plain`):

- DDL shows as a change in a digest of the catalog (``_pgsandbox.catalog()``), taken after
  each test and compared with the one taken when the database was new;
- the restore keeps foreign keys on and goes in their order: rows that are not the template's
  are deleted children first, missing rows are inserted parents first, and rows changed in
  place are updated back by primary key (so rows of untouched tables that point at them stay
  valid). User triggers of the tables being put back are turned off meanwhile (the tables'
  owner may do that); if the restore fails or writes to a table outside the ones put back,
  the database is swapped instead.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pytest_pgsandbox._engine.isolation import recycle
from pytest_pgsandbox._engine.isolation.clone import ClonePool
from pytest_pgsandbox._engine.isolation.reset_plain import CATALOG_DIGEST
from pytest_pgsandbox._engine.isolation.reset_plain import LEAVES
from pytest_pgsandbox._engine.isolation.reset_plain import RESET_PLAIN
from pytest_pgsandbox._engine.isolation.reset_plain import fk_order
from pytest_pgsandbox._engine.isolation.reset_plain import plain_restore
from pytest_pgsandbox._engine.isolation.transaction import SESSION_RESET
from pytest_pgsandbox._engine.isolation.transaction import as_new
from pytest_pgsandbox._engine.isolation.transaction import row_of
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers import roles
from pytest_pgsandbox._engine.templates import catalog
from pytest_pgsandbox._engine.urls import APPLICATION_NAME
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import PgSandboxWarning
from pytest_pgsandbox.errors import ServerError

SCHEMA = "_pgsandbox"
# This transaction's id as an xid (txid_current() carries the epoch in its high bits).
NOW_XID = "(txid_current() % 4294967296)::text::xid"
DDL = 0  # the "relation" recorded for DDL

_SETUP = """
CREATE SCHEMA IF NOT EXISTS _pgsandbox;
COMMENT ON SCHEMA _pgsandbox IS 'pgsandbox: what tests wrote, and the rows to put back';
-- changed: a statement other than INSERT (UPDATE, DELETE, TRUNCATE; an upsert fires both).
CREATE UNLOGGED TABLE _pgsandbox.touched (relid oid NOT NULL, changed bool NOT NULL DEFAULT true);
CREATE TABLE _pgsandbox.leaves (relid oid NOT NULL, leaf oid NOT NULL);
-- statements: put every row back; inserted: delete only rows newer than the mark (NULL when
-- the template's table is empty: then both are the same).
-- plain: rows added to it can be deleted with triggers and foreign keys on (PLAIN_DELETE).
CREATE TABLE _pgsandbox.restore (
    relid oid PRIMARY KEY, statements text NOT NULL, inserted text, plain bool NOT NULL);
-- A transaction id no older than any row the template's tables hold: rows whose xmin is
-- newer were written since.
CREATE TABLE _pgsandbox.mark (at xid NOT NULL);
CREATE TABLE _pgsandbox.settings (config text[]);
CREATE TABLE _pgsandbox.sequences (seq regclass PRIMARY KEY, last_value bigint, start bigint);
-- Without a superuser: the restore in foreign-key order (see RESET_PLAIN), and the catalog's
-- digest when the database was new.
CREATE TABLE _pgsandbox.ordered (
    relid oid PRIMARY KEY, pos int NOT NULL, drop_new text NOT NULL, put_back text,
    revert text, triggers_off text, triggers_on text);
CREATE TABLE _pgsandbox.catalog (digest text);

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
"""

_DDL_TRIGGERS = """
CREATE FUNCTION _pgsandbox.ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM _pgsandbox.touched WHERE relid = 0) THEN
        INSERT INTO _pgsandbox.touched VALUES (0);
    END IF;
END $$;
CREATE EVENT TRIGGER _pgsandbox_ddl ON ddl_command_end EXECUTE FUNCTION _pgsandbox.ddl();
CREATE EVENT TRIGGER _pgsandbox_drop ON sql_drop EXECUTE FUNCTION _pgsandbox.ddl();
"""

# What DDL changes, in the user's schemas: a digest compared after each test when no event
# trigger can record DDL. Object ids are part of it (a table dropped and made again is not the
# same table); what TRUNCATE, VACUUM and ANALYZE change (file nodes, statistics) is not.
_TABLES = """
SELECT c.oid, c.relkind::text, format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_pgsandbox', 'pgsandbox_clock')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY c.oid
"""

_NOT_OWNED = (  # constants only
    "SELECT t.name, pg_get_userbyid(c.relowner) FROM ("  # noqa: S608
    + _TABLES
    + ") t(oid, kind, name) JOIN pg_class c ON c.oid = t.oid "
    "WHERE NOT pg_has_role(c.relowner, 'USAGE') ORDER BY 1"
)

# The sessions on the database a reset ends: a test's work left open (see _DECLARE).
_LEFT_OPEN = (
    "a.datid = db AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend' "
    "AND a.state IS DISTINCT FROM 'idle' AND pg_has_role(a.usesysid, 'MEMBER') "
    "AND a.application_name IS DISTINCT FROM '{application_name}'"
)

# A table and every table below it (inheritance and partitions): a statement on the parent
# fires only the parent's statement triggers but may change every child.
_DECLARE = """
CREATE FUNCTION _pgsandbox.reset(wait_ms int) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    r record;
    wrote oid[];
    changed oid[];
    mark xid := (SELECT m.at FROM _pgsandbox.mark m);
    rewritten bool := false;
    n int := 0;
    ended int := 0;
    who text;
    waited timestamptz;
    phase text;
    db oid := (SELECT oid FROM pg_database WHERE datname = current_database());
BEGIN
    -- Work other connections have not committed must not land after the restore. (The
    -- function, not the pg_stat_activity view: the view costs half a millisecond more.)
    -- Only sessions this role may end (all, for a superuser): another role's would fail it.
    -- Not pgsandbox's own (another run starting on a database used in place): they hold no
    -- test's work. A connection closed just now shows as it was until its backend has
    -- exited (a millisecond or two, more on a loaded machine): up to 250 ms for those to go,
    -- so that only what is really left open is ended (and the test told).
    IF EXISTS (SELECT FROM pg_stat_get_activity(NULL) a WHERE {left_open}) THEN
        waited := clock_timestamp();
        LOOP
            -- Short naps first: most exiting backends are gone within a few milliseconds.
            PERFORM pg_sleep(CASE WHEN clock_timestamp() - waited < interval '20 ms'
                                  THEN 0.001 ELSE 0.005 END);
            PERFORM pg_stat_clear_snapshot();  -- the activity is read once per transaction
            EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_get_activity(NULL) a WHERE {left_open})
                   OR clock_timestamp() - waited > interval '250 ms';
        END LOOP;
        SELECT count({terminate}),
               string_agg(DISTINCT format('%s, %s', coalesce(nullif(a.application_name, ''),
                                                             'no application_name'), a.state),
                          '; ')
        INTO ended, who
        FROM pg_stat_get_activity(NULL) a WHERE {left_open};
    END IF;
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
"""

# The end of both: rows put back belong to the template's now, and sequences go back.
_END = """
    IF rewritten THEN
        UPDATE _pgsandbox.mark SET at = {now_xid};
    END IF;
    PERFORM setval(s.seq, coalesce(s.last_value, s.start), s.last_value IS NOT NULL)
    FROM _pgsandbox.sequences s
    WHERE pg_sequence_last_value(s.seq) IS DISTINCT FROM s.last_value;
    -- Rows put back, sessions ended, and what they were.
    RETURN concat_ws(' ', n, ended, who);
END $$;
"""

# With a superuser: triggers and foreign keys off, so order does not matter.
_RESET = """
    IF wrote IS NOT NULL THEN
        IF 0 = ANY(wrote) THEN
            RETURN 'ddl';
        END IF;
        -- Triggers and foreign keys off, unless only rows were added, to tables where
        -- nothing fires on their DELETE: every change of the setting throws away the
        -- session's cached plans (the next test's statements and triggers would be planned
        -- again).
        IF EXISTS (SELECT FROM _pgsandbox.restore s
                   WHERE s.relid IN (SELECT l.leaf FROM _pgsandbox.leaves l
                                     WHERE l.relid = ANY(wrote))
                     AND (NOT s.plain OR s.relid IN (SELECT l.leaf FROM _pgsandbox.leaves l
                                                     WHERE l.relid = ANY(changed))))
        THEN
            PERFORM set_config('session_replication_role', 'replica', true);
        END IF;
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
    END IF;
"""


# Without one: DDL seen in the catalog's digest; foreign keys stay on, so the restore goes in
# their order (see the module's docstring). Anything it cannot do is left to a swap.
def instrument(conn: psycopg.Connection[Any]) -> int:
    """Add the bookkeeping to the database ``conn`` is on; returns how many tables it watches.

    ``conn`` must own the tables. A superuser's records DDL with event triggers and restores
    with triggers off; any other role's the slower way of ``RESET_PLAIN``.
    """
    superuser = roles.rights(conn).superuser
    if not superuser:
        foreign = conn.execute(_NOT_OWNED).fetchall()
        if foreign:
            raise ServerError(
                f'isolation="reset" as {conn.info.user!r}, which is not a superuser, needs the '
                "role to own every table it puts back, and it does not own "
                + ", ".join(f"{name} (owner {owner})" for name, owner in foreign[:5])
                + ". Build the schema as this role, connect as a superuser, or use "
                'isolation="clone" or "transaction".'
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
            "INSERT INTO _pgsandbox.leaves " + LEAVES,
            {"oids": oids},
        )
        order = fk_order(conn, oids) if not superuser else {}
        plain = {  # see recycle.PLAIN_DELETE; our own trigger is left out there
            row[0]
            for row in conn.execute(
                f"SELECT c.oid FROM pg_class c WHERE c.oid = ANY(%s) AND {recycle.PLAIN_DELETE}",  # noqa: S608
                (oids,),
            ).fetchall()
        }
        for oid, kind, name in tables:
            if kind != "r":
                continue
            table = sql.SQL(name)  # quoted by format('%I.%I') in the catalog query
            columns = _columns(conn, oid)
            statements = sql.SQL("DELETE FROM ONLY {};").format(table)
            inserted = None
            copy = sql.Identifier(SCHEMA, f"b{oid}")
            has_rows = conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM ONLY {})").format(table))
            filled = bool(columns and (has_rows.fetchone() or (False,))[0])
            if filled:
                cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
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
                "INSERT INTO _pgsandbox.restore VALUES (%s, %s, %s, %s)",
                (
                    oid,
                    statements.as_string(conn),
                    inserted and inserted.as_string(conn),
                    oid in plain,
                ),
            )
            if not superuser:
                plan = plain_restore(conn, oid, table, columns, copy if filled else None)
                conn.execute(
                    "INSERT INTO _pgsandbox.ordered VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (oid, order.get(oid, 0), *plan),
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
        body = _DECLARE + (_RESET if superuser else RESET_PLAIN) + _END
        body = body.replace("{left_open}", _LEFT_OPEN).replace("{terminate}", terminate)
        body = body.replace("{now_xid}", NOW_XID)
        conn.execute(body.replace("{application_name}", APPLICATION_NAME))
        if superuser:
            conn.execute(_DDL_TRIGGERS)
        else:
            conn.execute(CATALOG_DIGEST)
            conn.execute("INSERT INTO _pgsandbox.catalog SELECT _pgsandbox.catalog()")
    return len(tables)


def _columns(conn: psycopg.Connection[Any], oid: int) -> list[str]:
    """The columns a row can be written with (all but generated ones)."""
    return [r[0] for r in conn.execute(catalog.COLUMNS, (oid,)).fetchall() if not r[4]]


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

    def __init__(self, admin: ConnInfo, pool: ClonePool | None, name: str, timeout: float) -> None:
        """``pool``: fresh copies to swap in; None: the database is used where it is."""
        self.admin = admin
        self.pool = pool
        self.name = name
        self.timeout = timeout
        self.info = admin.for_db(name)
        self.conn: psycopg.Connection[Any] | None = None
        self.swaps = 0
        self.oid: int | None = None  # of the copy swapped in: ours even if relabelled
        # Its own row as swapped in (see recycle.FINGERPRINT); None: used where it is.
        self.fingerprint: str | None = None
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
            found = row_of(
                conn,
                f"{rollback}{SESSION_RESET}; SELECT {SCHEMA}.reset({self.WAIT_MS:d}), "  # noqa: S608
                f"(SELECT {recycle.FINGERPRINT} FROM pg_database d "
                "WHERE d.datname = current_database())",
            )
            result, row = (*found, None, None)[:2]
        except psycopg.Error as exc:
            self.swap()  # whatever went wrong, the next test gets a clean copy
            raise ServerError(
                f"could not restore the tables the test wrote to ({str(exc).strip()}); the "
                "database was replaced by a fresh copy of the template."
            ) from None
        # The database's own row (owner, connection limit, ACL, comment) fires no event
        # trigger either: a test that changed it gets the database swapped too.
        changed = self.fingerprint is not None and row != self.fingerprint
        if result != "ddl" and not changed:
            as_new(conn)  # the next test gets it as a new connection would be
            _say_ended(self.name, result)
            return "reset"
        self.swap()
        return "swapped"

    def swap(self, keep_as: str | None = None) -> None:
        """Replace the database with a fresh copy under the same name.

        ``keep_as``: rename the old one to that instead of dropping it.
        """
        self._disconnect()
        with connect(self.admin, timeout=self.timeout) as admin:
            if keep_as is None:
                provision.drop_database(admin, self.name, self.oid)
            else:
                provision.end_sessions(admin, self.name)
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(self.name), sql.Identifier(keep_as)
                    )
                )
        self.swaps += 1
        self._swap_in()

    def _disconnect(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None

    def _swap_in(self) -> None:
        if self.pool is None:
            return
        fresh = self.pool.take()
        self.oid = self.pool.oid(fresh.dbname)
        with connect(self.admin, timeout=self.timeout) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(fresh.dbname), sql.Identifier(self.name)
                )
            )
            self.fingerprint = recycle.fingerprint(admin, self.name)

    def close(self, drop: bool = True) -> None:
        self._disconnect()
        if drop:
            with connect(self.admin, timeout=self.timeout) as admin:
                provision.drop_database(admin, self.name, self.oid)


def _say_ended(name: str, result: str | None) -> None:
    """Warn (in the test that left them) of the sessions the reset had to end, from what
    ``reset()`` returned ("rows ended who"): code that keeps them, a pool, meets a closed
    connection in the next test, with no word why."""
    _rows, ended, who = [*(result or "").split(" ", 2), "", "", ""][:3]
    count = int(ended) if ended.isdigit() else 0
    if count:
        who = f" ({who})" if who else ""
        warnings.warn(
            PgSandboxWarning(
                f"pgsandbox: the test left {count} connection(s) to {name!r} in an open "
                f"transaction or a running query{who}; reset ended them, so that their uncommitted "
                "work cannot land after the tables are put back. Code that keeps such a "
                "connection (a pool) gets an error on it in the next test: commit, roll back "
                "or close connections before the test ends (or let the pool check them, e.g. "
                "SQLAlchemy's pool_pre_ping)."
            ),
            stacklevel=3,
        )
