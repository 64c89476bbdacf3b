"""Clone recycling: a copy a test wrote rows to goes back to the pool once they are put back.

Making a copy (``CREATE DATABASE``) and dropping it cost about 9 ms of serial kernel work on a
quiet machine, far more under load; putting back the few rows a test wrote costs a fraction of
a millisecond. After a test, the server's own per-table statistics say what it wrote
(PostgreSQL 15+: a session that has ended flushed its counts before it left, and the test's
own session adds those it has not flushed yet, see ``COUNTS``). The copy is recycled when rows
of the template's tables are all it changed:

- a table that only had rows added loses just those (rows newer than the copy's *mark*, a
  transaction id no older than any row the template holds);
- any other table written to gets all of the template's rows back (read once per pool from
  the template, kept here as SQL), with triggers and foreign keys off
  (``session_replication_role = replica``: superusers only) so that order does not matter;
- sequences that moved are put back with ``setval()``.

Anything else drops the copy, as before: a write to any catalog table but ANALYZE's
statistics (DDL; TRUNCATE, temporary tables, large objects, comments and grants all write
catalog rows), another session still on the copy, a prepared transaction or replication slot
in it, a database or role setting, a change to the database's own row (owner, connection
limit, comment), a table too large to keep its rows that was not only added to, a table with
rules or with triggers that fire in replica mode, a role that is no superuser, a server older
than 15.

Nothing is added to the copy: what each copy's counters stood at and its mark live here, in
the pool's memory. Like reset's restore, a table whose rows were put back holds them in the
template's order but not in the same places on disk: a query without ``ORDER BY`` may return
rows a later test adds in another position than on a fresh copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import psycopg
from psycopg import sql

from pytest_pgsandbox._engine.isolation.transaction import restore_sql
from pytest_pgsandbox._engine.isolation.transaction import row_of

FIRST_USER_OID = 16384  # PostgreSQL's FirstNormalObjectId: below it, the catalogs
# Written by ANALYZE (a test's, autovacuum's): statistics, not contents.
STATISTICS = frozenset({2619, 3429})  # pg_statistic, pg_statistic_ext_data
# A table's rows are kept for a full restore up to this size (pg_table_size), and all of a
# template's up to TOTAL: beyond, a table a test updated or deleted from drops the copy.
TABLE_LIMIT = 1 << 20
TOTAL_LIMIT = 8 << 20
# Rows put back in one copy before it is dropped all the same: each leaves a dead row behind.
ROWS_LIMIT = 100_000

Counts = dict[int, tuple[int, int, int]]  # relation -> tuples inserted, updated, deleted

# The template's tables that a restore may write to as they are: no rules (they would rewrite
# the restore's own statements), no triggers that fire in replica mode.
_TABLES = """
SELECT c.oid, format('%I.%I', n.nspname, c.relname), pg_table_size(c.oid),
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = '' ORDER BY a.attnum),
       {plain}
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.oid >= 16384 AND NOT c.relisshared
  AND n.nspname NOT LIKE 'pg\\_temp%' AND n.nspname NOT LIKE 'pg\\_toast%'
  AND NOT EXISTS (SELECT FROM pg_rewrite r WHERE r.ev_class = c.oid)
  AND NOT EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgenabled IN ('A', 'R'))
ORDER BY c.oid
"""

# Whether rows added to table ``c`` can be deleted with triggers and foreign keys left on:
# nothing fires on such a DELETE (no trigger of the user's, no rule, no foreign key that
# points at the table; a partition's may be one on its parent). Then the restore needs no
# session_replication_role = replica, whose every change throws away all cached plans of
# the session: the next test would plan its statements (and its triggers') again.
PLAIN_DELETE = """
(NOT c.relispartition
 AND NOT EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal
                 AND t.tgenabled <> 'D' AND t.tgname <> '_pgsandbox_wrote')
 AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.contype = 'f' AND k.confrelid = c.oid)
 AND NOT EXISTS (SELECT FROM pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN'))
"""

# Values as their types' text output reads them back, whatever the session's style.
_STYLE = (
    "SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3; "
    "SET bytea_output = hex"
)

# What a test may have changed in the database's own row (and its comment: our label).
FINGERPRINT = """
md5(concat_ws(' ', d.datdba, d.datallowconn, d.datconnlimit, d.datistemplate, d.dattablespace,
              d.datacl, d.datcollversion, shobj_description(d.oid, 'pg_database'),
              (SELECT count(*) FROM pg_shseclabel l
               WHERE l.objoid = d.oid AND l.classoid = 'pg_database'::regclass)))
"""

# A relation's counts: those in the shared statistics, and this session's that have not
# reached them yet (all of its transactions' but the current one's, and the current one's):
# what the shared statistics will hold once the session has ended, read in one query.
# (VACUUM FREEZE keeps a row's raw xmin, the one the mark is compared with.)
COUNTS = """
pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_xact_tuples_inserted(c.oid) AS ins,
pg_stat_get_tuples_updated(c.oid) + pg_stat_get_xact_tuples_updated(c.oid) AS upd,
pg_stat_get_tuples_deleted(c.oid) + pg_stat_get_xact_tuples_deleted(c.oid) AS del
"""

# Read in the copy after the test: whether it may be recycled at all, and every relation of
# its own with rows written since it was made.
_STATE = """
SELECT current_setting('track_counts')::bool, current_setting('is_superuser')::bool,
       (SELECT string_agg(a.pid::text, ' ') FROM pg_stat_get_activity(NULL) a
        WHERE a.datid = d.oid AND a.pid <> pg_backend_pid()
          AND a.backend_type IS DISTINCT FROM 'autovacuum worker'),
       EXISTS (SELECT FROM pg_prepared_xacts x WHERE x.database = d.datname)
       OR EXISTS (SELECT FROM pg_replication_slots s WHERE s.database = d.datname)
       OR EXISTS (SELECT FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole <> 0)
       OR (SELECT s.setconfig FROM pg_db_role_setting s
           WHERE s.setdatabase = d.oid AND s.setrole = 0)
          IS DISTINCT FROM
          (SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database t
           ON t.oid = s.setdatabase WHERE t.datname = {template} AND s.setrole = 0),
       {fingerprint},
       (SELECT string_agg(concat_ws(' ', c.oid, c.ins, c.upd, c.del), ',') FROM (
            SELECT c.oid, {counts}
            FROM pg_class c WHERE c.relkind IN ('r', 'm') AND NOT c.relisshared) c
        WHERE c.ins + c.upd + c.del > 0),
       {moved}
FROM pg_database d WHERE d.datname = current_database()
"""

_OTHERS = """
SELECT string_agg(a.pid::text, ' ') FROM pg_stat_get_activity(NULL) a
WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.pid <> pg_backend_pid() AND a.backend_type IS DISTINCT FROM 'autovacuum worker'
"""


@dataclass(frozen=True)
class TemplateRows:
    """What a pool knows of its template's tables (see ``read_template``)."""

    tables: dict[int, str]  # oid -> qualified name: every table a restore may write to
    rewrite: dict[int, str]  # oid -> SQL that gives it all of the template's rows again
    mark: str  # a transaction id no older than any row of the template
    plain: frozenset[int] = frozenset()  # tables whose added rows go without replica mode


@dataclass
class CopyState:
    """One copy of the pool, between tests."""

    fingerprint: str  # its database row when new
    mark: str
    counts: Counts = field(default_factory=dict)  # its relations' counters when handed out
    rows: int = 0  # rows put back so far
    pid: int | None = None  # our last session on it (it may still be leaving)


def read_template(conn: psycopg.Connection[Any], mark: str) -> TemplateRows:
    """The tables of the database ``conn`` is on and the SQL that puts each one's rows back.

    ``mark``: a transaction id taken after the template was last written. ``conn`` must be in
    autocommit mode; its session's output style is changed.
    """
    conn.execute(_STYLE)
    tables: dict[int, str] = {}
    plain: set[int] = set()
    selects: list[sql.Composable] = []
    columns: dict[int, str] = {}
    total = 0
    for oid, name, size, cols, deletes_plainly in conn.execute(
        _TABLES.replace("{plain}", PLAIN_DELETE)
    ).fetchall():
        tables[oid] = name
        if deletes_plainly:
            plain.add(oid)
        total += size
        if size > TABLE_LIMIT or total > TOTAL_LIMIT:
            continue
        agg: sql.Composable = sql.SQL("NULL::text")
        if cols:
            columns[oid] = sql.SQL(", ").join(sql.Identifier(c) for c in cols).as_string(conn)
            quoted = sql.SQL(", ").join(
                sql.SQL("quote_nullable({})").format(sql.Identifier(c)) for c in cols
            )
            agg = sql.SQL("(SELECT string_agg('(' || concat_ws(', ', {}) || ')', ', ')").format(
                quoted
            ) + sql.SQL(" FROM ONLY {})").format(sql.SQL(name))
        selects.append(
            sql.SQL("SELECT {}::oid, {}, (SELECT count(*) FROM ONLY {})").format(
                oid, agg, sql.SQL(name)
            )
        )
    rewrite: dict[int, str] = {}
    if selects:
        for oid, values, count in conn.execute(sql.SQL(" UNION ALL ").join(selects)).fetchall():
            table = sql.SQL(tables[oid])  # quoted by format('%I.%I') in the catalog query
            statement = sql.SQL("DELETE FROM ONLY {};").format(table)
            if values:  # each value quoted by the server (quote_nullable)
                insert = " INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES {};"
                statement += sql.SQL(insert).format(table, sql.SQL(columns[oid]), sql.SQL(values))
            elif count:  # rows without columns: nothing to write them back with
                continue
            rewrite[oid] = statement.as_string(conn)
    return TemplateRows(tables, rewrite, mark, frozenset(plain))


def superuser(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT current_setting('is_superuser')::bool").fetchone()
    return bool(row and row[0])


def new_mark(conn: psycopg.Connection[Any]) -> str:
    """A transaction id newer than every row written so far (on any database of the server)."""
    row = conn.execute("SELECT (txid_current() % 4294967296)::text").fetchone()
    return str(row[0]) if row else ""


def fingerprint(conn: psycopg.Connection[Any], name: str) -> str:
    """The fingerprint of database ``name``'s own row (see ``FINGERPRINT``)."""
    query = sql.SQL(f"SELECT {FINGERPRINT} FROM pg_database d WHERE d.datname = {{}}")  # noqa: S608
    row = conn.execute(query.format(name)).fetchone()
    return str(row[0]) if row else ""


def state_query(conn: psycopg.Connection[Any], template: str, sequences: str) -> str:
    moved = "false"
    if sequences:  # numbers only, from sequence_values(): no injection possible
        moved = (
            f"EXISTS (SELECT FROM (VALUES {sequences}) v(seq, last, start) "  # noqa: S608
            "WHERE pg_sequence_last_value(v.seq::regclass) IS DISTINCT FROM v.last)"
        )
    return (
        _STATE.replace("{template}", sql.Literal(template).as_string(conn))
        .replace("{fingerprint}", FINGERPRINT)
        .replace("{counts}", COUNTS)
        .replace("{moved}", moved)
    )


def parse_counts(text: str | None) -> Counts:
    out: Counts = {}
    for part in (text or "").split(","):
        if part:
            oid, ins, upd, dele = (int(x) for x in part.split())
            out[oid] = (ins, upd, dele)
    return out


def written(before: Counts, now: Counts) -> Counts | None:
    """What was written since ``before`` per relation; None if a count went back (the
    counters were reset, or the copy is not the one ``before`` describes)."""
    out: Counts = {}
    for oid in before.keys() | now.keys():
        b, n = before.get(oid, (0, 0, 0)), now.get(oid, (0, 0, 0))
        delta = (n[0] - b[0], n[1] - b[1], n[2] - b[2])
        if min(delta) < 0:
            return None
        if any(delta):
            out[oid] = delta
    return out


def restore_plan(rows: TemplateRows, copy: CopyState, wrote: Counts) -> tuple[str, bool] | None:
    """The statements that put back what ``wrote`` says, and whether they rewrite a table
    (then the copy's mark moves); None if the copy must be dropped instead."""
    statements: list[str] = []
    rewritten = False
    for oid, (_ins, upd, dele) in sorted(wrote.items()):
        if oid < FIRST_USER_OID:
            return None  # a catalog (but the statistics, left out): DDL, TRUNCATE, ...
        name = rows.tables.get(oid)
        if name is None:
            return None  # not a table of the template's that a restore may write
        if upd == 0 and dele == 0:
            # The name as the server quoted it; the mark a number.
            statements.append(
                f"DELETE FROM ONLY {name} WHERE age(xmin) < age('{int(copy.mark):d}'::xid);"  # noqa: S608
            )
            continue
        statement = rows.rewrite.get(oid)
        if statement is None:
            return None  # too large to keep its rows
        statements.append(statement)
        rewritten = True
    return " ".join(statements), rewritten


def needs_replica(rows: TemplateRows, wrote: Iterable[int], rewritten: bool) -> bool:
    """Whether the restore must run with triggers and foreign keys off (see PLAIN_DELETE)."""
    return rewritten or not set(wrote) <= rows.plain


def restore_sql_for(
    plan: str, sequences: str, oids: Iterable[int], rewritten: bool, replica: bool = True
) -> str:
    """One implicit transaction: the restore, the sequences, then (last result) the new mark
    if a table was rewritten, the counts of the tables put back (``COUNTS``: the restore's
    own included), and the other sessions on the copy. ``replica``: with triggers and
    foreign keys off (see ``needs_replica``)."""
    listed = ",".join(str(int(o)) for o in oids)
    seqs = restore_sql(sequences)
    mark = "(txid_current() % 4294967296)::text" if rewritten else "NULL"
    role = "set_config('session_replication_role', 'replica', true), " if replica else ""
    return (
        f"SELECT {role}"  # noqa: S608
        "set_config('DateStyle', 'ISO', true), set_config('IntervalStyle', 'postgres', true), "
        "set_config('lock_timeout', '5s', true); "
        f"{plan} {seqs + '; DISCARD SEQUENCES;' if seqs else ''} "  # setval() sets currval()
        f"SELECT {mark}, (SELECT string_agg(concat_ws(' ', c.oid, c.ins, c.upd, c.del), ',') "
        f"FROM (SELECT c.oid, {COUNTS} FROM pg_class c "
        f"WHERE c.oid = ANY('{{{listed}}}'::oid[])) c), ({_OTHERS})"
    )


def others(conn: psycopg.Connection[Any]) -> set[int]:
    """The sessions on ``conn``'s database but its own (autovacuum's left out)."""
    return {int(p) for p in (row_of(conn, _OTHERS)[0] or "").split()}
