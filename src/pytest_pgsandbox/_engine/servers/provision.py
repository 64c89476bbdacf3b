"""Create and drop databases, and only ever drop our own.

Every database pgsandbox creates carries a label in its comment: ``pgsandbox:`` followed by
JSON (run, host, process, time). A database without that label is never dropped.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import errors
from psycopg import sql

from pytest_pgsandbox._engine.urls import APPLICATION_NAME
from pytest_pgsandbox.errors import ServerError
from pytest_pgsandbox.errors import UnsafeOperation

LABEL_PREFIX = "pgsandbox:"

Conn = psycopg.Connection[Any]


def make_label(extra: Mapping[str, object] | None = None) -> str:
    data: dict[str, object] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "created": round(time.time(), 3),
    }
    data.update(extra or {})
    return LABEL_PREFIX + json.dumps(data, sort_keys=True, separators=(",", ":"))


def parse_label(comment: str | None) -> dict[str, Any] | None:
    if not comment or not comment.startswith(LABEL_PREFIX):
        return None
    try:
        data = json.loads(comment[len(LABEL_PREFIX) :])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def database_label(conn: Conn, name: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (name,),
    ).fetchone()
    return None if row is None else parse_label(row[0])


def exists(conn: Conn, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def create_database(
    conn: Conn,
    name: str,
    label: Mapping[str, object],
    template: str | None = None,
    strategy: str | None = None,
    only_role: str | None = None,
) -> None:
    """CREATE DATABASE with our label. ``conn`` must be in autocommit mode.

    ``strategy``: WAL_LOG or FILE_COPY (PostgreSQL 15+), else the server's default.
    ``only_role``: no role but this one (and superusers) may connect to it.
    """
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    if strategy is not None and conn.info.server_version >= 150000:
        query += sql.SQL(" STRATEGY {}").format(sql.SQL(strategy))
    try:
        _create_retrying(conn, query, template)
    except errors.InsufficientPrivilege:
        user = conn.info.user
        raise ServerError(
            f"the role {user!r} may not create databases on {conn.info.host}:"
            f"{conn.info.port}, and pgsandbox needs one of its own for the tests. Grant it "
            f"(ALTER ROLE {user} CREATEDB), connect as a role that may, or leave --pg-url "
            "unset to use a private local server. Or name in the URL a database the role "
            "owns, made for the tests (CREATE DATABASE app_test OWNER "
            f"{user}): the tests then run in it in place, under transaction or reset isolation."
        ) from None
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(make_label(label))
        )
    )
    copy_settings(conn, template or "template1", name)
    if only_role is not None:
        db = sql.Identifier(name)
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        conn.execute(
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                db, sql.Identifier(only_role)
            )
        )


_OWN_CATALOGS = """
SELECT c.oid::regclass::text FROM pg_class c
WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r' AND NOT c.relisshared
-- Last: the rows that the others' rewrites change.
ORDER BY c.oid IN ('pg_attribute'::regclass, 'pg_class'::regclass), c.oid
"""


def compact_catalogs(conn: Conn) -> None:
    """Rewrite the catalogs of ``conn``'s database without their dead rows and free-space maps.

    Building a schema leaves both behind, and CREATE DATABASE copies every file: a template
    compacted once (about 70 ms) is a tenth smaller, and so is every copy made of it
    (``bench/isolation.py``: clone 5-8 % faster per writing test). Superusers only; the
    catalogs of the server's shared tables are left alone. ``conn`` must be in autocommit.
    """
    names = [row[0] for row in conn.execute(_OWN_CATALOGS)]
    conn.execute(sql.SQL("VACUUM FULL {}").format(sql.SQL(", ").join(map(sql.SQL, names))))


_DB_SETTINGS = """
SELECT split_part(c, '=', 1), substr(c, strpos(c, '=') + 1)
FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c
WHERE d.datname = %s AND s.setrole = 0
"""


def copy_settings(conn: Conn, source: str, name: str) -> None:
    """Give ``name`` the database-level settings of ``source`` (ALTER DATABASE ... SET).

    CREATE DATABASE does not copy them, yet a copy of a template must behave like it: a
    ``search_path`` or ``timezone`` set by the schema's migrations (or pgsandbox's clock)
    belongs to the template. Each value goes through ``set_config`` and ``SET ... FROM
    CURRENT`` so that lists (search_path) keep their form; nothing is interpolated.
    """
    settings = conn.execute(_DB_SETTINGS, (source,)).fetchall()
    if not settings:
        return
    with conn.transaction():
        for key, value in settings:
            conn.execute("SELECT set_config(%s, %s, true)", (key, value))
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} FROM CURRENT").format(
                    sql.Identifier(name), sql.Identifier(key)
                )
            )


def _create_retrying(conn: Conn, query: sql.Composed, template: str | None) -> None:
    """CREATE DATABASE, retried while the template is briefly in use by another session."""
    deadline = time.monotonic() + 30
    delay = 0.01
    while True:
        try:
            conn.execute(query)
            return
        except errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise ServerError(
                    f"could not copy template {template!r} for 30 s: other sessions keep "
                    "connecting to it. Close connections to the template database."
                ) from None
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)


def database_oid(conn: Conn, name: str) -> int | None:
    """The object id of database ``name`` (None if there is none)."""
    row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return None if row is None else int(row[0])


def drop_database(conn: Conn, name: str, oid: int | None = None) -> None:
    """Drop ``name`` after checking it carries our label; ends its sessions first.

    ``oid``: the database this process created under that name, which is dropped even if
    its label was replaced (a test's own ``COMMENT ON DATABASE``).
    """
    if not exists(conn, name):
        return
    if database_label(conn, name) is None and (oid is None or database_oid(conn, name) != oid):
        raise UnsafeOperation(
            f"refusing to drop database {name!r}: it has no pgsandbox label, so pgsandbox "
            "did not create it. Nothing was changed."
        )
    row = conn.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (name,))
    if (row.fetchone() or (False,))[0]:  # a template cannot be dropped as it is
        conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(name)))
    if conn.info.server_version >= 130000:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        return
    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
    )
    end_sessions(conn, name)
    conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


def end_sessions(conn: Conn, name: str, tests_only: bool = False) -> None:
    """End the other sessions on database ``name``.

    ``tests_only``: only this role's, and not pgsandbox's own (this run's lock on a database
    used in place, another run that is starting on it and will be told to wait).
    """
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid() AND (NOT %s OR "
        "(usename = current_user AND application_name IS DISTINCT FROM %s))",
        (name, tests_only, APPLICATION_NAME),
    )


def relabel(conn: Conn, name: str, label: Mapping[str, object]) -> None:
    """Replace the label of one of our databases (e.g. when a test's database is kept)."""
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(make_label(label))
        )
    )


def labelled_databases(conn: Conn) -> list[tuple[str, dict[str, Any]]]:
    rows = conn.execute(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE shobj_description(oid, 'pg_database') LIKE 'pgsandbox:%' ORDER BY datname"
    ).fetchall()
    out = []
    for name, comment in rows:
        label = parse_label(comment)
        if label is not None:
            out.append((str(name), label))
    return out


# A database the tests use in place (isolation/inplace.py) carries this table.
IN_PLACE_MARK = "_pgsandbox.in_place"


def is_in_place(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn``'s database is one pgsandbox uses in place."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (IN_PLACE_MARK,)).fetchone()
    return bool(row and row[0])
