"""Database time that can be frozen together with Python time.

Every template carries a schema, ``pgsandbox_clock``, with its own ``now()``,
``transaction_timestamp()``, ``statement_timestamp()``, ``clock_timestamp()`` and
``timeofday()``. Each returns PostgreSQL's own value unless the one-row table
``pgsandbox_clock.frozen`` holds a frozen instant. The database's ``search_path`` is
``"$user", public, pgsandbox_clock, pg_catalog``: naming ``pg_catalog`` last makes unqualified
calls find these functions first, while new tables still go to ``public``. It is set before
the schema is built, so column defaults and views written with ``now()`` bind to the clock;
functions and triggers look ``now()`` up when they run, through the same path.

The frozen instant lives in a table, not a session setting, so every connection to the
database sees it: under clone and reset isolation the application's own pool too, even
connections opened before the freeze. It is written through a connection of its own and
committed at once (no rollback of the test's can take it away), and deleted when the test
ends; under transaction isolation each worker's database is its own.

``CURRENT_TIMESTAMP``, ``CURRENT_DATE``, ``LOCALTIMESTAMP`` and the other SQL keywords are
not function calls PostgreSQL looks up by name; :func:`rewrite` replaces them in the text of
queries sent through the test's own connections while time is frozen.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import psycopg
from psycopg import sql

SCHEMA = "pgsandbox_clock"
VERSION = 1  # part of every template's hash: a change here rebuilds templates
SEARCH_PATH = f'"$user", public, {SCHEMA}, pg_catalog'

# The frozen instant, moving with real time from `since` when ticking.
_FROZEN = f"(SELECT f.at + coalesce({{clock}} - f.since, interval '0') FROM {SCHEMA}.frozen f)"  # noqa: S608 (constants only)

INSTALL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
COMMENT ON SCHEMA {SCHEMA} IS 'pytest-pgsandbox: database time that tests can freeze';
CREATE UNLOGGED TABLE IF NOT EXISTS {SCHEMA}.frozen (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    at timestamptz NOT NULL,
    since timestamptz
);
GRANT USAGE ON SCHEMA {SCHEMA} TO PUBLIC;
GRANT SELECT ON {SCHEMA}.frozen TO PUBLIC;
CREATE OR REPLACE FUNCTION {SCHEMA}.now() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce({_FROZEN.format(clock="pg_catalog.now()")}, pg_catalog.now()) $$;
CREATE OR REPLACE FUNCTION {SCHEMA}.transaction_timestamp() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT {SCHEMA}.now() $$;
CREATE OR REPLACE FUNCTION {SCHEMA}.statement_timestamp() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce({_FROZEN.format(clock="pg_catalog.statement_timestamp()")},
                          pg_catalog.statement_timestamp()) $$;
CREATE OR REPLACE FUNCTION {SCHEMA}.clock_timestamp() RETURNS timestamptz
    LANGUAGE sql VOLATILE PARALLEL SAFE
    AS $$ SELECT coalesce({_FROZEN.format(clock="pg_catalog.clock_timestamp()")},
                          pg_catalog.clock_timestamp()) $$;
CREATE OR REPLACE FUNCTION {SCHEMA}.timeofday() RETURNS text
    LANGUAGE sql VOLATILE PARALLEL SAFE
    AS $$ SELECT pg_catalog.to_char({SCHEMA}.clock_timestamp(),
                                    'Dy Mon DD HH24:MI:SS.US YYYY TZ') $$;
"""


def install(conn: psycopg.Connection[Any]) -> None:
    """Create the clock in ``conn``'s database and put it on the database's search_path.

    Idempotent. The connection's own search_path is set too, so that a schema built on it
    next binds its defaults to the clock. A clock the database got from its template, owned
    by another role, stays as it is (this role could not replace it).
    """
    owner = conn.execute(
        "SELECT pg_get_userbyid(nspowner) = current_user FROM pg_namespace WHERE nspname = %s",
        (SCHEMA,),
    ).fetchone()
    if owner is None or owner[0] or not installed(conn):
        conn.execute(INSTALL)
    dbname = sql.Identifier(conn.info.dbname)
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET search_path = {}").format(dbname, sql.SQL(SEARCH_PATH))
    )
    conn.execute(sql.SQL("SET search_path = {}").format(sql.SQL(SEARCH_PATH)))


def installed(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.frozen",)).fetchone()
    return bool(row and row[0])


def freeze(conn: psycopg.Connection[Any], at: dt.datetime, ticking: bool = False) -> None:
    """Hold the database's time at ``at`` (moving on with real time if ``ticking``)."""
    since = sql.SQL("pg_catalog.now()" if ticking else "NULL")
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.frozen (at, since) VALUES (%s, {}) "
            "ON CONFLICT (one) DO UPDATE SET at = excluded.at, since = excluded.since"
        ).format(sql.Identifier(SCHEMA), since),
        (at,),
    )


def unfreeze(conn: psycopg.Connection[Any]) -> None:
    conn.execute(sql.SQL("DELETE FROM {}.frozen").format(sql.Identifier(SCHEMA)))


# -- SQL keywords ----------------------------------------------------------------------------

# What the parser turns into calls of pg_catalog's functions by itself (so no search_path can
# reach them), and the clock expression each becomes while time is frozen.
_KEYWORDS = {
    "current_timestamp": "timestamptz",
    "current_date": "date",
    "current_time": "timetz",
    "localtimestamp": "timestamp",
    "localtime": "time",
}
# Strings, quoted names, dollar quotes and comments are skipped whole; keywords are replaced.
_TOKENS = re.compile(
    r"""
    (?P<skip>
        [Ee]'(?:[^'\\]|\\.|'')*'         # E'...' with backslash escapes
      | '(?:[^']|'')*'                   # '...'
      | "(?:[^"]|"")*"                   # "quoted identifier"
      | (?P<dollar>\$[A-Za-z_]*\$).*?(?P=dollar)   # $tag$ ... $tag$
      | --[^\n]*                         # -- comment
      | /\*.*?\*/                        # /* comment */
    )
    | (?<![\w.$"])(?P<kw>current_timestamp|current_date|current_time|localtimestamp|localtime)
      (?![\w$"])(?P<precision>\s*\(\s*\d+\s*\))?
    """,
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
_QUICK = re.compile(r"current_|localtime", re.IGNORECASE)
_AFTER_AS = re.compile(r"\bas\s*$", re.IGNORECASE)


def rewrite(query: str) -> str:
    """``query`` with CURRENT_TIMESTAMP and the other time keywords read from the clock."""
    if not _QUICK.search(query):
        return query

    def replace(m: re.Match[str]) -> str:
        kw = m.group("kw")
        if kw is None or _AFTER_AS.search(m.string, 0, m.start()):
            return m.group(0)  # skipped text, or a column label: SELECT 1 AS current_date
        cast = _KEYWORDS[kw.lower()]
        precision = m.group("precision")
        if precision and cast != "date":
            cast += "(" + precision.strip().strip("()").strip() + ")"
        return f"{SCHEMA}.now()::{cast}"

    return _TOKENS.sub(replace, query)
