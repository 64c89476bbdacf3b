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

Picture = dict[str, str]

_USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', '_pgsandbox') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)

_CATALOG = """
SELECT 'schema ' || n.nspname, pg_get_userbyid(n.nspowner)
FROM pg_namespace n WHERE {USER}
UNION ALL
SELECT CASE c.relkind WHEN 'r' THEN 'table ' WHEN 'p' THEN 'table ' WHEN 'v' THEN 'view '
       WHEN 'm' THEN 'materialized view ' WHEN 'S' THEN 'sequence ' WHEN 'f' THEN 'foreign table '
       WHEN 'c' THEN 'type ' ELSE 'relation ' END || format('%I.%I', n.nspname, c.relname),
       coalesce((SELECT string_agg(format('%I %s%s%s', a.attname,
                       format_type(a.atttypid, a.atttypmod),
                       CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                       coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')),
                       ', ' ORDER BY a.attnum)
                 FROM pg_attribute a
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
       || coalesce(' as ' || pg_get_viewdef(c.oid), '')
       || coalesce(' acl ' || c.relacl::text, '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c') AND {USER}
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
""".replace("{USER}", _USER_SCHEMAS)

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
        for key, value in conn.execute(_CATALOG).fetchall():
            out[str(key)] = str(value)
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
