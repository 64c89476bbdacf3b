"""What a database holds, read from its catalog: tables, columns, keys, load order.

Scenario export and load (``scenario``) and reset's restore (``isolation.reset``) read the
same facts the same way. :func:`objects` names every catalog object of the user's schemas
with its definition: the isolation verifier (``isolation.verify``) and the migration checks
(``migrations``) compare databases with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import psycopg

from pytest_pgsandbox._engine.templates.scenario_files import QualName

Conn = psycopg.Connection[Any]

# The user's schemas: not PostgreSQL's, not the reset machinery's.
USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', '_pgsandbox') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)

# Every catalog object, a row each: (what it is and its name, its definition). A table's
# columns are rows of their own, so that a difference names the column.
OBJECTS = """
SELECT 'schema ' || n.nspname, pg_get_userbyid(n.nspowner)
FROM pg_namespace n WHERE {USER}
UNION ALL
SELECT CASE c.relkind WHEN 'r' THEN 'table ' WHEN 'p' THEN 'table ' WHEN 'v' THEN 'view '
       WHEN 'm' THEN 'materialized view ' WHEN 'S' THEN 'sequence ' WHEN 'f' THEN 'foreign table '
       WHEN 'c' THEN 'type ' ELSE 'relation ' END || format('%I.%I', n.nspname, c.relname),
       pg_get_userbyid(c.relowner)
       || coalesce(' as ' || pg_get_viewdef(c.oid), '')
       || coalesce(' acl ' || c.relacl::text, '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c') AND {USER}
UNION ALL
SELECT 'column ' || format('%I.%I.%I', n.nspname, c.relname, a.attname),
       format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
       || coalesce(' acl ' || a.attacl::text, '')
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c') AND a.attnum > 0 AND NOT a.attisdropped
  AND {USER}
UNION ALL
SELECT 'index ' || format('%I.%I', n.nspname, c.relname), pg_get_indexdef(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('i', 'I') AND {USER}
UNION ALL
SELECT 'constraint ' || format('%I.%I', n.nspname, co.conname) || ' on '
       || co.conrelid::regclass::text, pg_get_constraintdef(co.oid)
FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
WHERE {USER}
UNION ALL
SELECT 'trigger ' || t.tgname || ' on ' || t.tgrelid::regclass::text,
       pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND t.tgname NOT LIKE '\\_pgsandbox\\_%' AND {USER}
UNION ALL
SELECT 'function ' || format('%I.%I(%s)', n.nspname, p.proname,
       pg_get_function_identity_arguments(p.oid)), md5(pg_get_functiondef(p.oid))
       || coalesce(' acl ' || p.proacl::text, '')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind IN ('f', 'p', 'w') AND {USER}
UNION ALL
SELECT 'type ' || format('%I.%I', n.nspname, t.typname),
       t.typtype::text || coalesce(' ' || (SELECT string_agg(e.enumlabel, ',' ORDER BY
       e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid), '')
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'r', 'm') AND {USER}
UNION ALL
SELECT 'extension ' || extname, extversion FROM pg_extension
UNION ALL
SELECT 'event trigger ' || evtname, evtevent || ' ' || evtenabled::text
FROM pg_event_trigger WHERE evtname NOT LIKE '\\_pgsandbox\\_%'
UNION ALL
SELECT 'database setting ' || split_part(c, '=', 1) || CASE WHEN s.setrole = 0 THEN ''
       ELSE ' for role ' || pg_get_userbyid(s.setrole) END, substr(c, strpos(c, '=') + 1)
FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = (
    SELECT oid FROM pg_database WHERE datname = current_database())
UNION ALL
SELECT 'sequence position ' || format('%I.%I', n.nspname, c.relname),
       coalesce(pg_sequence_last_value(c.oid)::text, 'not called')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND {USER}
""".replace("{USER}", USER_SCHEMAS)


def objects(cursor: Any) -> dict[str, str]:
    """Every catalog object of the user's schemas and its definition (see ``OBJECTS``),
    read through ``cursor``: any DB-API cursor (psycopg, psycopg2, SQLAlchemy's)."""
    cursor.execute(OBJECTS)
    return {str(key): str(value) for key, value in cursor.fetchall()}


# Ours, PostgreSQL's, and the reset machinery's: never part of a scenario.
_SKIPPED_SCHEMAS = ("pg_catalog", "information_schema", "pgsandbox_clock", "_pgsandbox")
# Output that does not depend on the server's or the session's settings.
_TABLES = """
SELECT c.oid, n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""

_SEQUENCES = """
SELECT c.oid, n.nspname, c.relname, owner.refobjid
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_depend owner ON owner.classid = 'pg_class'::regclass AND owner.objid = c.oid
  AND owner.refclassid = 'pg_class'::regclass AND owner.deptype IN ('a', 'i')
WHERE c.relkind = 'S'
  AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""

# A table's columns: name, type, NOT NULL, has a default (or identity), generated.
COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       a.atthasdef OR a.attidentity <> '', a.attgenerated <> ''
FROM pg_attribute a
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# A table's primary key, in key order: column name, and whether it has a collation.
PRIMARY_KEY = """
SELECT a.attname, a.attcollation <> 0
FROM pg_index i
JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisprimary
ORDER BY k.ord
"""

_REFERENCES = """
SELECT conrelid, confrelid FROM pg_constraint
WHERE contype = 'f' AND conrelid = ANY(%s) AND confrelid = ANY(%s)
"""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool
    has_default: bool  # a DEFAULT or an identity
    generated: bool


@dataclass
class Catalog:
    """The tables and sequences of a database, as scenarios see them."""

    tables: dict[QualName, int] = field(default_factory=dict)  # -> oid
    sequences: dict[QualName, tuple[int, int | None]] = field(default_factory=dict)  # oid, owner
    _columns: dict[int, list[Column]] = field(default_factory=dict)

    @classmethod
    def read(cls, conn: Conn) -> Catalog:
        found = cls()
        skipped = list(_SKIPPED_SCHEMAS)
        for oid, schema, name in conn.execute(_TABLES, (skipped,)).fetchall():
            found.tables[(schema, name)] = int(oid)
        for oid, schema, name, owner in conn.execute(_SEQUENCES, (skipped,)).fetchall():
            found.sequences[(schema, name)] = (int(oid), None if owner is None else int(owner))
        return found

    def columns(self, conn: Conn, oid: int) -> list[Column]:
        got = self._columns.get(oid)
        if got is None:
            # Type names qualified by schema (but PostgreSQL's own) whatever the search_path:
            # the same schema gives the same names in any database.
            (saved,) = conn.execute("SELECT current_setting('search_path')").fetchone() or ("",)
            conn.execute("SELECT set_config('search_path', 'pg_catalog', true)")
            try:
                rows = conn.execute(COLUMNS, (oid,)).fetchall()
            finally:
                conn.execute("SELECT set_config('search_path', %s, true)", (saved,))
            got = self._columns[oid] = [Column(*row) for row in rows]
        return got

    def load_order(self, conn: Conn, keys: Iterable[QualName]) -> list[QualName]:
        """``keys`` so that every table comes after the tables it references (by name among
        equals; tables in a reference cycle last, by name)."""
        pending = sorted(set(keys))
        oids = {self.tables[k]: k for k in pending}
        needs: dict[QualName, set[QualName]] = {k: set() for k in pending}
        for child, parent in conn.execute(_REFERENCES, (list(oids), list(oids))).fetchall():
            if child != parent:
                needs[oids[int(child)]].add(oids[int(parent)])
        order: list[QualName] = []
        while pending:
            ready = [k for k in pending if not needs[k] - set(order)]
            if not ready:  # a cycle: loaded with the checks deferred to the end
                order.extend(pending)
                break
            order.append(ready[0])
            pending.remove(ready[0])
        return order
