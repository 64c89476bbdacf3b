"""Clone isolation recycles a copy a test only wrote rows to; anything else drops it.

Run in file order. Every test first checks that its copy is exactly a fresh one: the verifier's
picture (catalog objects, sequence positions, row counts and checksums), the catalog digest,
every row of every table as text, and every sequence's state, against those the first test
saw on its fresh copy. The tests that write only rows (in several tables, with sequences, a
foreign key with a cascade, a trigger that writes another table, partitions, a generated
column, values of awkward types) hand their copy on; those that change anything else must
not.
"""

import json
import os
import subprocess
import sys

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.rows import tuple_row

from pytest_pgsandbox._engine.isolation.verify import catalog_digest
from pytest_pgsandbox._engine.isolation.verify import picture

pytestmark = pytest.mark.pg(isolation="clone")
_left_open = []

TABLES = ("customers", "invoices", "audit", "events_2025", "events_2026", "notes")
SEQUENCES = ("customers_id_seq", "invoices_id_seq", "audit_id_seq", "ticket_seq")


def state(conn):
    """Everything a test could see of its copy, as text."""
    conn.rollback()
    out = {f"picture {k}": v for k, v in picture(conn).items()}
    out["catalog digest"] = catalog_digest(conn)
    rows = "SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM {} t"
    for table in TABLES:
        query = sql.SQL(rows).format(sql.Identifier(table))
        out[f"rows {table}"] = conn.execute(query).fetchone()[0]
    for seq in SEQUENCES:
        query = sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(seq))
        out[f"sequence {seq}"] = str(conn.execute(query).fetchone())
    conn.rollback()
    return out


@pytest.fixture(autouse=True)
def starts_as_a_fresh_copy(pg, request):
    fresh = os.environ["FRESH_FILE"]
    now = state(pg.conn)
    if not os.path.exists(fresh):  # the first test: a copy no test used
        with open(fresh, "w") as f:
            json.dump(now, f)
    with open(fresh) as f:
        expected = json.load(f)
    assert now == expected
    with open(os.environ["NAMES_FILE"], "a") as f:
        f.write(f"{request.node.name} {pg.dbname}\n")


def test_fresh(pg):
    assert pg.fetchval("SELECT count(*) FROM customers") == 3


def test_rows_added_in_several_tables(pg):
    cid = pg.fetchval("INSERT INTO customers (name) VALUES ('Farah Haddad') RETURNING id")
    pg.execute("INSERT INTO invoices (customer_id, total) VALUES (%s, 5), (1, 6)", (cid,))
    pg.execute("INSERT INTO events VALUES (9, '2026-03-01', 'new')")
    pg.execute("SELECT nextval('ticket_seq')")
    pg.conn.commit()
    assert pg.fetchval("SELECT count(*) FROM audit") == 4  # the trigger wrote too


def test_rows_changed_and_deleted(pg):
    pg.execute("UPDATE customers SET name = name || '!', tags = '{x}' WHERE id = 1")
    pg.execute("DELETE FROM customers WHERE id = 2")  # cascades to invoices
    pg.execute("UPDATE invoices SET total = total + 1")  # the trigger writes audit
    pg.execute("UPDATE events SET at = '2025-06-01' WHERE id = 2")  # moves partitions
    pg.execute("DELETE FROM notes")
    pg.conn.commit()


def test_a_foreign_key_broken_with_triggers_off(pg):
    pg.execute("SET session_replication_role = replica")
    pg.execute("INSERT INTO invoices (customer_id, total) VALUES (999, 1)")
    pg.conn.commit()


def test_another_process_wrote_and_left(pg):
    code = (
        "import sys, psycopg\n"
        "with psycopg.connect(sys.argv[1]) as c:\n"
        "    c.execute(\"INSERT INTO customers (name) VALUES ('Gao Min')\")\n"
        "    c.execute('DELETE FROM audit')\n"
        "    c.execute(\"SELECT setval('ticket_seq', 500)\")\n"
    )
    subprocess.run([sys.executable, "-c", code, pg.url], check=True, timeout=60)


def test_an_insert_rolled_back_and_analyze(pg):
    pg.execute("INSERT INTO customers (name) VALUES ('Hana Sato')")
    pg.conn.rollback()
    pg.conn.autocommit = True
    pg.execute("ANALYZE customers")


def test_rows_added_then_frozen(pg):
    pg.execute("INSERT INTO notes VALUES ('frozen', 2)")
    pg.conn.commit()
    pg.conn.autocommit = True
    pg.execute("VACUUM FREEZE notes")


def test_reads_after(pg):
    assert pg.fetchval("SELECT count(*) FROM invoices") == 2


def test_session_state_left_behind(pg):
    pg.execute("SET work_mem = '1MB'")
    pg.execute("SELECT pg_advisory_lock(42), nextval('ticket_seq')")
    pg.execute("LISTEN news")
    pg.execute("DECLARE kept CURSOR WITH HOLD FOR SELECT 1")
    pg.conn.commit()
    pg.conn.autocommit = True
    pg.conn.row_factory = dict_row
    pg.conn.prepare_threshold = 0
    with open(os.environ["NAMES_FILE"] + ".pid", "w") as f:
        f.write(str(pg.conn.info.backend_pid))


def test_the_next_test_gets_the_session_as_a_new_one(pg):
    if os.environ.get("VERIFYING"):  # copies are then put back before the next test
        with open(os.environ["NAMES_FILE"] + ".pid") as f:
            assert pg.conn.info.backend_pid == int(f.read())  # handed on, not opened again
    conn = pg.conn
    assert (conn.autocommit, conn.row_factory, conn.prepare_threshold) == (False, tuple_row, 5)
    settings = "SELECT setting = reset_val FROM pg_settings WHERE name = 'work_mem'"
    assert pg.fetchval(settings)
    mine = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    assert pg.fetchval(mine) == 0
    assert pg.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
    assert pg.fetchval("SELECT count(*) FROM pg_cursors WHERE name = 'kept'") == 0
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        pg.execute("SELECT currval('ticket_seq')")


# From here on, each test changes something rows cannot say: its copy must not be handed on.


def test_ddl(pg):
    pg.execute("ALTER TABLE customers ADD COLUMN nickname text")
    pg.conn.commit()


def test_truncate(pg):
    pg.execute("TRUNCATE audit")
    pg.conn.commit()


def test_a_database_setting(pg):
    pg.execute(f"ALTER DATABASE {pg.dbname} SET work_mem = '1MB'")
    pg.conn.commit()


def test_a_connection_limit(pg):
    pg.execute(f"ALTER DATABASE {pg.dbname} CONNECTION LIMIT 50")
    pg.conn.commit()


def test_a_temporary_table(pg):
    pg.execute("CREATE TEMP TABLE scratch AS SELECT * FROM customers")
    pg.conn.commit()


def test_a_large_object(pg):
    pg.execute("SELECT lo_from_bytea(0, 'abc')")
    pg.conn.commit()


def test_another_connection_left_open(pg):
    app = psycopg.connect(pg.url, autocommit=True)
    app.execute("INSERT INTO notes (body) VALUES ('left')")
    _left_open.append(app)


def test_last(pg):
    pass
