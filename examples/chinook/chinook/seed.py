"""Load the generated rows into the template: ``pg_seed = callable:chinook.seed:load``.

The plugin runs this once, when it builds the template; every test starts from a copy.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from chinook.data import generate


def load(conn: psycopg.Connection[Any]) -> None:
    """COPY every table's rows, then move each identity sequence past the ids given."""
    store = generate()
    with conn.cursor() as cur:
        for table, rows in store.tables():
            columns = rows[0]._fields
            copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with cur.copy(copy) as out:
                for row in rows:
                    out.write_row(row)
            key = f"{table}_id"
            if columns[0] == key:  # playlist_track has no identity column
                cur.execute(
                    "SELECT setval(pg_get_serial_sequence(%s, %s), %s)",
                    (table, key, max(row[0] for row in rows)),
                )
