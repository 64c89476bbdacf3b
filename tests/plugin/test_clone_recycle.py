"""Clone isolation hands a copy on after a test that wrote only rows, those rows put back.

``examples/clone_recycle.py`` checks at the start of every test that its copy is exactly a
fresh one (the verifier's picture, the catalog digest, every row and every sequence); here it
runs with the verifier on, and which copies were handed on is checked from the names each
test saw.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pgsb_helpers import leftovers
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.urls import connect

SCHEMA = r"""
CREATE TABLE customers (
    id serial PRIMARY KEY, name text NOT NULL UNIQUE, tags text[], meta jsonb, born date,
    balance numeric(10, 2), photo bytea, spent interval, score float8, seen timestamptz
);
CREATE TABLE invoices (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers ON DELETE CASCADE,
    total numeric(10, 2) NOT NULL,
    doubled numeric GENERATED ALWAYS AS (total * 2) STORED
);
CREATE TABLE audit (id serial PRIMARY KEY, what text NOT NULL);
CREATE FUNCTION log_invoice() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit (what) VALUES (TG_OP || ' ' || NEW.id);
    RETURN NEW;
END $$;
CREATE TRIGGER invoices_audit AFTER INSERT OR UPDATE ON invoices
    FOR EACH ROW EXECUTE FUNCTION log_invoice();
CREATE SEQUENCE ticket_seq START 100;
CREATE TABLE events (id int, at date NOT NULL, note text) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE notes (body text, n int);

INSERT INTO customers (name, tags, meta, born, balance, photo, spent, score, seen) VALUES
    ('Alice Chen', '{a,"b c"}', '{"k": [1, "x\\y"]}', '2001-02-03', 12.34, '\x00ff',
     '1 day 02:03:04', 0.1, '2026-01-02 03:04:05.123456+00'),
    ('Bob O''Kafor', NULL, NULL, NULL, NULL, NULL, NULL, 'NaN', NULL),
    (E'\u00c7a \u00abva\u00bb \\ ok', '{}', '[]', 'infinity', -0.5, '\x', '-1 mon',
     1e-300, 'infinity');
INSERT INTO invoices (customer_id, total) VALUES (1, 10.50), (2, 20);
INSERT INTO events VALUES (1, '2025-02-01', 'a'), (2, '2026-02-01', 'b');
INSERT INTO notes VALUES ('x', 1), ('x', 1), (NULL, NULL);
SELECT nextval('ticket_seq');
"""

RECYCLED = [
    "test_fresh",
    "test_rows_added_in_several_tables",
    "test_rows_changed_and_deleted",
    "test_a_foreign_key_broken_with_triggers_off",
    "test_another_process_wrote_and_left",
    "test_an_insert_rolled_back_and_analyze",
    "test_rows_added_then_frozen",
    "test_reads_after",
    "test_session_state_left_behind",
    "test_the_next_test_gets_the_session_as_a_new_one",
]
DROPPED = [
    "test_ddl",
    "test_truncate",
    "test_a_database_setting",
    "test_a_connection_limit",
    "test_a_temporary_table",
    "test_a_large_object",
    "test_another_connection_left_open",
]


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "in-the-background"])
def test_a_copy_only_rows_were_written_to_is_handed_on_as_fresh(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch, verify: bool
) -> None:
    """With the verifier, each copy is compared and put back before the next test; without
    it, the pool's own thread puts copies back while the next test runs."""
    names = pytester.path / "names.txt"
    monkeypatch.setenv("NAMES_FILE", str(names))
    monkeypatch.setenv("FRESH_FILE", str(pytester.path / "fresh.json"))
    if verify:
        monkeypatch.setenv("VERIFYING", "1")
    (pytester.path / "schema.sql").write_text(SCHEMA)
    pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
    pytester.copy_example("clone_recycle.py")
    args = ["--pg-verify-isolation"] if verify else []
    result = pytester.runpytest_subprocess("clone_recycle.py", *args)
    result.assert_outcomes(passed=len(RECYCLED) + len(DROPPED) + 1)
    used = [line.split() for line in names.read_text().splitlines()]
    assert [test for test, _ in used] == [*RECYCLED, *DROPPED, "test_last"]
    for i, (test, name) in enumerate(used[:-1]):
        later = [n for _, n in used[i + 1 :]]
        if test in RECYCLED:  # handed to a later test, as fresh (checked by the test itself)
            assert name in later, test
        else:  # never handed on
            assert name not in later, test
    assert leftovers(runtime) == []


@pytest.mark.parametrize("isolation", ["clone", "reset"])
def test_a_test_that_replaces_the_database_comment_does_not_stop_the_others(
    pytester: pytest.Pytester, existing: LocalCluster, isolation: str
) -> None:
    """Our label is the database's comment; a test that comments its own database replaces
    it. The copy is still ours to drop (known by its object id), and later tests go on, on
    a database without that comment (reset swaps in a fresh copy)."""
    pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
    (pytester.path / "schema.sql").write_text("CREATE TABLE t (id int);\n")
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.pg(isolation=ISOLATION)

        def test_comment(pg):
            pg.execute(f"COMMENT ON DATABASE {pg.dbname} IS 'the shop'")
            pg.conn.commit()

        @pytest.mark.parametrize("n", range(3))
        def test_later(pg, n):
            row = pg.fetchval("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                              "WHERE datname = current_database()")
            assert row != "the shop"
            assert pg.fetchval("SELECT count(*) FROM t") == 0
        """.replace("ISOLATION", repr(isolation))
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", f"--pg-url={existing.admin.url()}")
    result.assert_outcomes(passed=4)
    assert "refusing to drop" not in result.stdout.str() + result.stderr.str()
    with connect(existing.admin) as conn:  # the tests' databases are all gone
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pgsandbox_%' "
            "AND datname NOT LIKE 'pgsandbox_tpl_%' ORDER BY 1"
        ).fetchall()
    assert left == []
