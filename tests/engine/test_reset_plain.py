"""Reset isolation for a role that is no superuser: restore in foreign-key order, DDL by digest.

A superuser's reset turns foreign keys and triggers off; this one may not, so each write a test
may make is put back here with the keys on, and must leave exactly the template's rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pytest_pgsandbox._engine.isolation import reset
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import ServerError

SCHEMA = """
CREATE TABLE teams (id int PRIMARY KEY, name text UNIQUE NOT NULL);
CREATE TABLE users (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    team_id int NOT NULL REFERENCES teams,               -- NO ACTION: teams stay put
    name text NOT NULL,
    name_upper text GENERATED ALWAYS AS (upper(name)) STORED,
    manager_id int REFERENCES users ON DELETE SET NULL,
    profile jsonb
);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    user_id int NOT NULL REFERENCES users ON DELETE CASCADE,
    total numeric(10, 2) NOT NULL
);
CREATE TABLE log (what text);                            -- no key
CREATE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO log VALUES ('deleted ' || OLD.name); RETURN OLD; END $$;
CREATE TRIGGER users_log AFTER DELETE ON users FOR EACH ROW EXECUTE FUNCTION log_delete();
CREATE TABLE events (day date NOT NULL, what text) PARTITION BY RANGE (day);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE events_2027 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
CREATE FUNCTION log_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO log VALUES ('event gone: ' || OLD.what); RETURN OLD; END $$;
-- a row trigger on the partitioned table: each partition gets a clone of it
CREATE TRIGGER events_log AFTER DELETE ON events FOR EACH ROW EXECUTE FUNCTION log_event();
CREATE TABLE empty_at_first (id int PRIMARY KEY, team_id int REFERENCES teams);

INSERT INTO teams VALUES (1, 'Core'), (2, 'Growth');
INSERT INTO users (team_id, name, profile) VALUES (1, 'Alice Chen', '{"a": [1, 2]}');
INSERT INTO users (team_id, name, manager_id) VALUES (1, 'Bob Okafor', 1), (2, 'Carmen Ruiz', 1);
INSERT INTO orders (user_id, total) VALUES (1, 10), (2, 20.5), (3, 7.25);
INSERT INTO log VALUES ('started');
INSERT INTO events VALUES ('2026-05-01', 'launch'), ('2027-02-01', 'anniversary');
"""

TABLES = ["teams", "users", "orders", "log", "events", "empty_at_first"]

WRITES = {
    "insert": "INSERT INTO users (team_id, name) VALUES (2, 'Dana'); "
    "INSERT INTO orders (user_id, total) VALUES (4, 1)",
    "update": "UPDATE users SET name = 'Alice C.', profile = '{}' WHERE id = 1; "
    "UPDATE teams SET name = 'Platform' WHERE id = 1",
    "delete with cascades and set null": "DELETE FROM users WHERE id = 1",
    "truncate": "TRUNCATE orders, log",
    "delete all through a partitioned parent": "DELETE FROM events",
    "a new parent row and a child moved to it": "INSERT INTO teams VALUES (3, 'New'); "
    "UPDATE users SET team_id = 3 WHERE id = 2; DELETE FROM teams WHERE id = 2 AND false",
    "a template row deleted and a child moved off it": "UPDATE users SET team_id = 1; "
    "DELETE FROM teams WHERE id = 2",
    "rows in a table empty in the template": "INSERT INTO empty_at_first VALUES (1, 1)",
    "a key changed": "UPDATE orders SET id = 100 WHERE id = 1",
    "user triggers write elsewhere": "DELETE FROM users WHERE id = 3",
}


@pytest.fixture
def database(existing: LocalCluster) -> ConnInfo:
    """A database made, filled and instrumented by a role that may create databases only."""
    with connect(existing.admin) as admin:
        admin.execute(sql.SQL("CREATE ROLE app LOGIN CREATEDB PASSWORD {}").format("app-pw-1"))
    app = dataclasses.replace(existing.admin, user="app", password="app-pw-1")
    with connect(app) as conn:
        conn.execute("CREATE DATABASE plain")
    info = app.for_db("plain")
    with connect(info) as conn:
        conn.execute(SCHEMA)
    with connect(info, autocommit=False) as conn:
        reset.instrument(conn)
    return info


def contents(conn: psycopg.Connection[Any]) -> dict[str, list[Any]]:
    return {
        t: conn.execute(
            sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(sql.Identifier(t))
        ).fetchall()
        for t in TABLES
    } | {"sequences": conn.execute("SELECT last_value FROM orders_id_seq").fetchall()}


def run_reset(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT _pgsandbox.reset(5000)").fetchone()
    return str(row[0]) if row else ""


@pytest.mark.parametrize("write", list(WRITES))
def test_each_write_is_put_back_with_foreign_keys_on(database: ConnInfo, write: str) -> None:
    with connect(database) as conn:
        before = contents(conn)
        conn.execute(WRITES[write])
        assert contents(conn) != before
        assert run_reset(conn) != "ddl"
        assert contents(conn) == before
        # and again: the rows put back now count as the template's
        conn.execute(WRITES[write])
        assert run_reset(conn) != "ddl"
        assert contents(conn) == before
        assert conn.execute("SELECT count(*) FROM _pgsandbox.touched").fetchone() == (0,)
        # the user's trigger is on again
        triggers = conn.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'users_log'")
        assert triggers.fetchall() == [("O",)]


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_writes_one_after_another(database: ConnInfo, order: str) -> None:
    """Rows put back by one reset count as the template's in the next."""
    writes = list(WRITES.values())
    with connect(database) as conn:
        before = contents(conn)
        for write in writes if order == "forward" else writes[::-1]:
            conn.execute(write)
            assert run_reset(conn) != "ddl", write
            assert contents(conn) == before, write


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE extra (id int)",
        "ALTER TABLE users ADD COLUMN age int",
        "CREATE INDEX ON orders (total)",
        "DROP TABLE log",
        "ALTER TABLE users DISABLE TRIGGER users_log",
        "CREATE OR REPLACE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN OLD; END $$",
        "ALTER SEQUENCE orders_id_seq INCREMENT BY 5",
        "GRANT SELECT ON users TO PUBLIC",
        "ALTER DATABASE plain SET work_mem = '1MB'",
    ],
)
def test_ddl_asks_for_a_fresh_copy(database: ConnInfo, ddl: str) -> None:
    with connect(database) as conn:
        conn.execute(ddl)
        assert run_reset(conn) == "ddl"


def test_a_restore_that_cannot_be_done_asks_for_a_fresh_copy(database: ConnInfo) -> None:
    """Two unique names swapped through a third: updating back one at a time collides."""
    with connect(database) as conn:
        conn.execute(
            "UPDATE teams SET name = 'tmp' WHERE id = 1; UPDATE teams SET name = 'Core' "
            "WHERE id = 2; UPDATE teams SET name = 'Growth' WHERE id = 1"
        )
        assert run_reset(conn) == "ddl"


def test_tables_the_role_does_not_own_are_named(existing: LocalCluster) -> None:
    with connect(existing.admin) as admin:
        admin.execute(sql.SQL("CREATE ROLE app LOGIN CREATEDB PASSWORD {}").format("app-pw-1"))
        admin.execute("CREATE DATABASE mixed OWNER app")
        with connect(existing.admin.for_db("mixed")) as conn:
            conn.execute("CREATE TABLE theirs (id int)")
    app = dataclasses.replace(existing.admin, user="app", password="app-pw-1")
    with (
        connect(app.for_db("mixed"), autocommit=False) as conn,
        pytest.raises(ServerError, match=r"does not own public\.theirs \(owner postgres\)"),
    ):
        reset.instrument(conn)


@pytest.mark.parametrize("sees_it", [False, True], ids=["hidden", "seen"])
def test_another_roles_open_transaction_does_not_stop_the_reset(
    existing: LocalCluster, database: ConnInfo, sees_it: bool
) -> None:
    """A session the role may not end (a superuser's, idle in a transaction) is left alone.

    "seen": the role may read every session's state (pg_read_all_stats), yet still not end a
    superuser's.
    """
    if sees_it:
        with connect(existing.admin) as admin:
            admin.execute("GRANT pg_read_all_stats TO app")
    with (
        connect(existing.admin.for_db("plain"), autocommit=False) as other,
        connect(database) as conn,
    ):
        other.execute("SELECT 1")  # now idle in transaction
        before = contents(conn)
        conn.execute(WRITES["update"])
        assert run_reset(conn) != "ddl"
        assert contents(conn) == before
        assert not other.closed


def test_pgsandboxs_own_sessions_survive_a_reset_and_a_tests_do_not(database: ConnInfo) -> None:
    """Another run starting on a database used in place is busy on it for a moment: its
    session holds no test's work, and the reset leaves it alone (the test's left-open
    transaction it ends)."""
    with (
        connect(database, autocommit=False) as ours,
        psycopg.connect(database.conninfo()) as tests,
        connect(database) as conn,
    ):
        ours.execute("SELECT 1")  # both idle in a transaction
        tests.execute("SELECT 1")
        conn.execute(WRITES["update"])
        assert run_reset(conn) != "ddl"
        assert ours.execute("SELECT 2").fetchone() == (2,)
        with pytest.raises(psycopg.OperationalError):
            tests.execute("SELECT 2")
