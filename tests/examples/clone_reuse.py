"""Clone isolation hands a copy to the next test when nothing changed it, or only rows and
sequences (put back first); any other change means a new one."""

import os
import subprocess
import sys

import psycopg
import pytest

pytestmark = pytest.mark.pg(isolation="clone")
_left_open = []


@pytest.fixture(autouse=True)
def starts_from_the_template(pg, request):
    # Reads only: a check that wrote would itself change the copy.
    assert pg.fetchval("SELECT count(*) FROM users") == 5
    assert pg.fetchval("SELECT string_agg(name, ',' ORDER BY id) FROM users").startswith(
        "Alice Chen,"
    )
    assert pg.fetchval("SELECT pg_sequence_last_value('users_id_seq')") == 5
    assert pg.fetchval("SELECT to_regclass('extra')") is None
    settings = pg.fetchall(
        "SELECT unnest(setconfig) FROM pg_db_role_setting s JOIN pg_database d "
        "ON d.oid = s.setdatabase WHERE d.datname = current_database()"
    )
    assert settings == [('search_path="$user", public, pgsandbox_clock, pg_catalog',)]
    pg.conn.rollback()
    with open(os.environ["NAMES_FILE"], "a") as f:
        f.write(f"{request.node.name} {pg.dbname}\n")


@pytest.mark.parametrize("n", range(4))
def test_reads_only(pg, n):
    assert pg.fetchval("SELECT count(*) FROM orders") == 3


def test_nextval_only(pg):
    pg.execute("SELECT nextval('users_id_seq')")


def test_an_insert_rolled_back(pg):
    pg.execute("INSERT INTO users (name) VALUES ('Farah Haddad')")
    pg.conn.rollback()


def test_update_of_no_row_changes_nothing(pg):
    pg.execute("UPDATE users SET name = 'x' WHERE false")
    pg.conn.commit()


def test_a_temporary_table(pg):
    pg.execute("CREATE TEMP TABLE scratch (id int)")
    pg.conn.commit()


def test_truncate_of_an_empty_table(pg):
    pg.execute("CREATE TABLE extra (id int)")
    pg.conn.commit()
    pg.execute("TRUNCATE extra")
    pg.conn.commit()


def test_a_database_setting(pg):
    pg.execute(f"ALTER DATABASE {pg.dbname} SET work_mem = '1MB'")
    pg.conn.commit()


def test_another_process_wrote_and_left(pg):
    code = (
        "import sys, psycopg\n"
        "with psycopg.connect(sys.argv[1]) as c:\n"
        '    c.execute("DELETE FROM orders")\n'
    )
    subprocess.run([sys.executable, "-c", code, pg.url], check=True, timeout=60)


def test_another_connection_left_open(pg):
    app = psycopg.connect(pg.url, autocommit=True)
    app.execute("SELECT 1")
    _left_open.append(app)
