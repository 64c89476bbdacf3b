"""Each test creates the same table, inserts and commits: none sees another's work."""

import pytest


@pytest.mark.parametrize("n", range(3))
def test_writes_and_commits(pg, n):
    assert pg.fetchval("SELECT to_regclass('items')") is None
    pg.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
    pg.execute("INSERT INTO items VALUES (%s, %s)", (n, "Alice Chen"))
    pg.conn.commit()
    assert pg.fetchval("SELECT count(*) FROM items") == 1


def test_sees_a_clean_database(pg):
    assert pg.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
