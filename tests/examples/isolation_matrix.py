"""The isolation matrix: whatever a test does, the next one starts from the template.

Run with each --pg-isolation, forward, reversed, shuffled and under xdist. Every test first
checks that it starts from exactly the template's state, then changes it and commits.
"""

import subprocess
import sys
import threading

import psycopg
import pytest

BASELINE = [
    ("SELECT count(*) FROM users", 5),
    (
        "SELECT string_agg(name, ',' ORDER BY id) FROM users",
        "Alice Chen,Bob Okafor,Carmen Ruiz,Dmitri Ivanov,Emeka Eze",
    ),
    ("SELECT count(*) FROM orders", 3),
    ("SELECT string_agg(total::text, ',' ORDER BY id) FROM orders", "10.00,20.50,7.25"),
]
_left_open = []  # connections a test "forgot": isolation must cope with them


@pytest.fixture(autouse=True)
def starts_from_the_template(pg):
    for query, expected in BASELINE:
        assert pg.fetchval(query) == expected, query
    assert pg.fetchval("SELECT to_regclass('extra')") is None
    assert (
        pg.fetchval("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users'")
        == 3
    )
    assert pg.fetchval("SHOW search_path") == '"$user", public, pgsandbox_clock, pg_catalog'
    # Sequences are where the template left them: ids do not depend on earlier tests.
    assert pg.fetchval("INSERT INTO users (name) VALUES ('probe') RETURNING id") == 6
    pg.conn.rollback()


def other_connection(pg):
    """A connection of the code under test: its own, on pg.url (not under transaction)."""
    if pg.isolation == "transaction":
        pytest.skip("under transaction isolation other connections cannot see the test")
    return psycopg.connect(pg.url)


def test_insert_commit(pg):
    pg.execute("INSERT INTO users (name) VALUES ('Farah Haddad')")
    pg.execute("INSERT INTO orders (user_id, total) VALUES (1, 99)")
    pg.conn.commit()
    assert pg.fetchval("SELECT count(*) FROM users") == 6


def test_update_commit(pg):
    pg.execute("UPDATE users SET name = upper(name)")
    pg.conn.commit()


def test_delete_commit(pg):
    pg.execute("DELETE FROM users WHERE id = 1")  # cascades to orders
    pg.conn.commit()
    assert pg.fetchval("SELECT count(*) FROM orders") == 1


def test_truncate(pg):
    pg.execute("TRUNCATE users CASCADE")
    pg.conn.commit()


def test_create_table(pg):
    pg.execute("CREATE TABLE extra (id int)")
    pg.execute("INSERT INTO extra VALUES (1)")
    pg.conn.commit()


def test_alter_table(pg):
    pg.execute("ALTER TABLE users ADD COLUMN nickname text")
    pg.execute("UPDATE users SET nickname = 'x'")
    pg.conn.commit()


def test_drop_table(pg):
    pg.execute("DROP TABLE orders")
    pg.conn.commit()


def test_sequences(pg):
    for _ in range(3):
        pg.execute("SELECT nextval('users_id_seq')")
    pg.conn.commit()


def test_session_settings(pg):
    pg.execute("SET search_path = pg_catalog")
    pg.conn.commit()


def test_two_connections(pg):
    with other_connection(pg) as app:
        app.execute("INSERT INTO users (name) VALUES ('Gwen Park')")
        app.commit()
    assert pg.fetchval("SELECT count(*) FROM users") == 6


def test_a_thread(pg):
    def work():
        if pg.isolation == "transaction":
            pg.execute("INSERT INTO users (name) VALUES ('Hiro Tanaka')")
            pg.conn.commit()
        else:
            with psycopg.connect(pg.url) as app:
                app.execute("INSERT INTO users (name) VALUES ('Hiro Tanaka')")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    assert pg.fetchval("SELECT count(*) FROM users WHERE name = 'Hiro Tanaka'") == 1


def test_a_subprocess(pg):
    other_connection(pg).close()  # skips under transaction isolation
    code = (
        "import sys, psycopg\n"
        "with psycopg.connect(sys.argv[1]) as c:\n"
        '    c.execute("UPDATE orders SET total = 0")\n'
    )
    subprocess.run([sys.executable, "-c", code, pg.url], check=True, timeout=60)
    assert pg.fetchval("SELECT sum(total) FROM orders") == 0


def test_a_connection_left_open_in_a_transaction(pg):
    app = other_connection(pg)
    app.execute("DELETE FROM orders")  # never committed, never closed
    _left_open.append(app)
