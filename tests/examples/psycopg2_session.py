"""pg_engine and pg_session on psycopg2 (driver=psycopg2), under the isolation asked for."""

import psycopg2
import pytest
from sqlalchemy import text


@pytest.fixture(autouse=True)
def starts_clean(pg):
    assert pg.fetchval("SELECT count(*) FROM users") == 2
    assert pg.fetchval("SELECT pg_sequence_last_value('users_id_seq')") == 2
    pg.conn.rollback()


@pytest.mark.parametrize("n", [1, 2])
def test_session_commits(pg_session, n):
    raw = pg_session.connection().connection.driver_connection
    assert isinstance(raw, psycopg2.extensions.connection)
    pg_session.execute(text("INSERT INTO users (name) VALUES ('Farah Haddad')"))
    pg_session.commit()
    pg_session.execute(text("INSERT INTO users (name) VALUES ('Gus Grant')"))
    pg_session.rollback()
    assert pg_session.execute(text("SELECT count(*) FROM users")).scalar() == 3


def test_engine_and_psycopg2_api(pg_engine, pg):
    with pg_engine.connect() as conn:
        cur = conn.connection.driver_connection.cursor()
        from psycopg2.extras import execute_values

        execute_values(cur, "INSERT INTO users (name) VALUES %s", [("A",), ("B",)])
        conn.commit()
        assert conn.execute(text("SELECT count(*) FROM users")).scalar() == 4
