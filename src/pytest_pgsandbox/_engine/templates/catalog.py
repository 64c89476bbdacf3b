"""What a database holds, read from its catalog: tables, columns, keys, load order.

Scenario export and load (``scenario``) and reset's restore (``isolation.reset``) read the
same facts the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import psycopg

from pytest_pgsandbox._engine.templates.scenario_files import QualName

Conn = psycopg.Connection[Any]

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
