"""Isolation verification: is the database after a test the same as before it?

A *picture* of a database is a mapping from a name ("table public.users", "rows public.users",
"trigger ...") to a description: the catalog objects of the user's schemas with their
definitions, sequence positions, database settings and extensions, and for every table its row
count and an order-independent checksum of its rows. Taken once when a test database is new,
and again after each test; any difference is a leak, named by what differs.

Objects pgsandbox adds for reset isolation (schema ``_pgsandbox``, triggers ``_pgsandbox_*``)
are left out.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pytest_pgsandbox._engine.templates.catalog import USER_SCHEMAS as _USER_SCHEMAS
from pytest_pgsandbox._engine.templates.catalog import objects

Picture = dict[str, str]

_TABLES = """
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND {USER} ORDER BY 1
""".replace("{USER}", _USER_SCHEMAS)

_DIGEST = """
SELECT md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) FROM (
    SELECT 'schema ' || nspname AS x FROM pg_namespace
    WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', '_pgsandbox')
    UNION ALL
    SELECT 'extension ' || extname || ' ' || extversion FROM pg_extension
    UNION ALL
    SELECT format('%s %s.%s', c.relkind, n.nspname, c.relname) FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT IN ('information_schema', '_pgsandbox')
    UNION ALL
    SELECT format('column %s.%s.%s %s', n.nspname, c.relname, a.attname,
                  format_type(a.atttypid, a.atttypmod))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT IN ('information_schema', '_pgsandbox')
) objects
"""


def catalog_digest(conn: psycopg.Connection[Any]) -> str:
    """A hash of the schemas, extensions, relations and columns of ``conn``'s database."""
    row = conn.execute(_DIGEST).fetchone()
    return str(row[0]) if row else ""


def picture(conn: psycopg.Connection[Any]) -> Picture:
    """What the database ``conn`` is on holds now (see the module's docstring)."""
    out: Picture = {}
    with conn.transaction():
        out.update(objects(conn.cursor()))
        tables = [str(row[0]) for row in conn.execute(_TABLES).fetchall()]
        if tables:
            parts = [
                sql.SQL(
                    "SELECT {name}, count(*), coalesce(sum(hashtextextended(x::text, 0)), 0) "
                    "FROM ONLY {table} x"
                ).format(name=sql.Literal(table), table=sql.SQL(table))
                for table in tables
            ]
            query = sql.SQL(" UNION ALL ").join(parts)
            for table, count, checksum in conn.execute(query).fetchall():
                out[f"rows {table}"] = f"{count} rows (checksum {checksum})"
    return out


def differences(before: Picture, after: Picture) -> list[str]:
    """What changed from ``before`` to ``after``, one line each, in name order."""
    lines = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if old is None:
            lines.append(f"+ {key}: {new}" if not key.startswith("rows ") else f"+ {key}")
        elif new is None:
            lines.append(f"- {key}")
        elif key.startswith("rows "):
            old_n, new_n = old.split(" rows")[0], new.split(" rows")[0]
            what = f"{new_n} rows, template has {old_n}" if old_n != new_n else "rows changed"
            lines.append(f"~ {key[5:]}: {what}")
        else:
            lines.append(f"~ {key}: {new} (template: {old})")
    return lines
