"""Reset isolation's edge cases, the isolation verifier, and keeping failed tests' databases."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgsb_helpers import leftovers
from pgsb_helpers import pgsandbox

SCHEMA = """
CREATE TABLE users (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    name_upper text GENERATED ALWAYS AS (upper(name)) STORED,
    manager_id int REFERENCES users
);
INSERT INTO users (name) VALUES ('Alice Chen');
INSERT INTO users (name, manager_id) VALUES ('Bob Okafor', 1);

CREATE TABLE audit (what text);
CREATE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit VALUES ('deleted ' || OLD.name); RETURN OLD; END $$;
CREATE TRIGGER users_audit AFTER DELETE ON users FOR EACH ROW EXECUTE FUNCTION audit_delete();

-- Referenced by nothing, but a trigger fires on its DELETE: its restore needs triggers off.
CREATE TABLE logins (who text);
CREATE FUNCTION login_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit VALUES ('login of ' || OLD.who || ' deleted'); RETURN OLD; END $$;
CREATE TRIGGER logins_gone AFTER DELETE ON logins FOR EACH ROW EXECUTE FUNCTION login_gone();

CREATE TABLE events (day date NOT NULL, what text) PARTITION BY RANGE (day);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE events_2027 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
INSERT INTO events VALUES ('2026-05-01', 'launch'), ('2027-02-01', 'anniversary');

CREATE TABLE animals (name text);
CREATE TABLE cats (lives int) INHERITS (animals);
INSERT INTO cats VALUES ('Tom', 9);
"""

TESTS = """
import psycopg
import pytest

pytestmark = pytest.mark.pg(isolation="reset")
URLS = set()


@pytest.fixture(autouse=True)
def starts_from_the_template(pg):
    assert pg.fetchall("SELECT id, name, name_upper, manager_id FROM users ORDER BY id") == [
        (1, "Alice Chen", "ALICE CHEN", None), (2, "Bob Okafor", "BOB OKAFOR", 1)]
    assert pg.fetchval("SELECT count(*) FROM audit") == 0
    assert pg.fetchval("SELECT count(*) FROM logins") == 0
    assert pg.fetchall("SELECT tableoid::regclass::text, what FROM events ORDER BY day") == [
        ("events_2026", "launch"), ("events_2027", "anniversary")]
    assert pg.fetchall("SELECT tableoid::regclass::text, name FROM animals") == [("cats", "Tom")]
    URLS.add(pg.url)
    pg.conn.rollback()


def test_self_reference_and_user_triggers(pg):
    pg.execute("DELETE FROM users")  # the audit trigger fires; foreign keys hold
    pg.conn.commit()
    assert pg.fetchval("SELECT count(*) FROM audit") == 2


def test_partitions_written_through_the_parent(pg):
    pg.execute("DELETE FROM events")
    pg.execute("INSERT INTO events VALUES ('2027-12-31', 'new year')")
    pg.conn.commit()


def test_rows_only_added_are_removed_alone(pg):
    with psycopg.connect(pg.url) as other:  # committed on another connection
        other.execute("INSERT INTO users (name, manager_id) VALUES ('Dana', 2), ('Eve', 1)")
    pg.execute("INSERT INTO events VALUES ('2026-06-01', 'through the parent')")
    pg.execute("INSERT INTO events_2027 VALUES ('2027-06-01', 'into a partition')")
    pg.execute("INSERT INTO cats VALUES ('Felix', 7)")
    pg.execute("SAVEPOINT s; INSERT INTO audit VALUES ('kept'); RELEASE s")
    pg.execute("SAVEPOINT t; INSERT INTO audit VALUES ('rolled back'); ROLLBACK TO t")
    pg.conn.commit()


def test_rows_added_where_nothing_fires_on_delete(pg):
    # Put back with triggers and foreign keys left on: no setting of the session changes.
    pg.execute("INSERT INTO audit VALUES ('only here')")
    pg.conn.commit()


def test_rows_added_where_a_trigger_fires_on_delete(pg):
    # Put back with triggers off: the audit trigger must not see the restore.
    pg.execute("INSERT INTO logins VALUES ('Alice Chen')")
    pg.conn.commit()


def test_an_upsert_counts_as_a_change(pg):
    pg.execute(
        "INSERT INTO users (id, name) OVERRIDING SYSTEM VALUE VALUES (1, 'Alicia') "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name"
    )
    pg.execute("INSERT INTO users (name) VALUES ('Frank')")
    pg.conn.commit()


def test_inheritance_children_written_through_the_parent(pg):
    pg.execute("DELETE FROM animals")
    pg.conn.commit()


def test_ddl_swaps_the_database_under_the_same_url(pg):
    pg.execute("ALTER TABLE users ADD COLUMN email text")
    pg.conn.commit()


def test_pg_session_commits_for_real(pg, pg_session):
    from sqlalchemy import text

    pg_session.execute(text("INSERT INTO users (name) VALUES ('Gwen Park')"))
    pg_session.commit()
    with psycopg.connect(pg.url) as other:
        assert other.execute("SELECT count(*) FROM users").fetchone()[0] == 3


def test_the_url_never_changed(pg):
    assert len(URLS) == 1


APP = {}


def test_an_idle_pooled_connection_survives_a_reset(pg):
    APP["conn"] = conn = psycopg.connect(pg.url, autocommit=True)
    conn.execute("INSERT INTO users (name) VALUES ('Carmen Ruiz')")


def test_and_is_still_usable_in_the_next_test(pg):
    assert APP["conn"].execute("SELECT count(*) FROM users").fetchone()[0] == 2
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "schema.sql").write_text(SCHEMA)
    pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
    return pytester


LEFT_OPEN = """
import psycopg
import pytest

pytestmark = pytest.mark.pg(isolation="reset")
APP = {}


def test_leaves_a_transaction_open(pg):
    APP["conn"] = conn = psycopg.connect(pg.url)
    conn.execute("INSERT INTO users (name) VALUES ('Carmen Ruiz')")  # never committed


def test_its_work_never_lands(pg):
    assert pg.fetchval("SELECT count(*) FROM users") == 2
    with pytest.raises(psycopg.OperationalError):
        APP["conn"].execute("SELECT 1")  # ended by the reset


def test_a_closed_connection_is_no_news(pg):
    with psycopg.connect(pg.url) as conn:
        conn.execute("INSERT INTO users (name) VALUES ('Dmitri Ivanov')")
        conn.rollback()


@pytest.mark.parametrize("n", range(5))
def test_nor_one_closed_in_its_transaction(pg, n):
    # Its backend may still show "idle in transaction" as the test ends: it is exiting.
    conn = psycopg.connect(pg.url)
    conn.execute("INSERT INTO users (name) VALUES ('Emeka Eze')")
    conn.close()
"""


def test_a_connection_left_in_a_transaction_is_ended_with_a_warning_naming_the_test(
    project: pytest.Pytester, runtime: Path
) -> None:
    project.makepyfile(test_left_open=LEFT_OPEN)
    result = project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=8, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*test_left_open.py::test_leaves_a_transaction_open*",
            "*PgSandboxWarning: pgsandbox: the test left 1 connection(s) to * in an open "
            "transaction or a running query (no application_name, idle in transaction); "
            "reset ended them*",
        ]
    )
    # As an error (filterwarnings): that test fails at teardown, the database is put back.
    strict = project.runpytest_subprocess(
        "-p", "no:randomly", "-W", "error::pytest_pgsandbox.PgSandboxWarning"
    )
    strict.assert_outcomes(passed=8, errors=1)
    strict.stdout.fnmatch_lines(["ERROR *test_leaves_a_transaction_open*"])
    assert leftovers(runtime) == []


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_reset_restores_what_tests_wrote(
    project: pytest.Pytester, runtime: Path, order: str
) -> None:
    project.makepyfile(test_reset=TESTS)
    if order == "reversed":
        project.makeconftest("def pytest_collection_modifyitems(items):\n    items.reverse()\n")
    result = project.runpytest_subprocess("--pg-verify-isolation", "-p", "no:randomly")
    if order == "reversed":  # the pooled connection is made after it is looked for
        result.assert_outcomes(passed=11, failed=1)
    else:
        result.assert_outcomes(passed=12)
    assert leftovers(runtime) == []


def test_the_verifier_names_what_leaked_and_repairs(
    project: pytest.Pytester, runtime: Path
) -> None:
    project.makepyfile(
        """
        import psycopg

        def test_leaks(pg):  # its own connection commits behind the rolled-back transaction
            with psycopg.connect(pg.info.url()) as other:
                other.execute("INSERT INTO users (name) VALUES ('leak')")
                other.execute(f"ALTER DATABASE {pg.dbname} SET work_mem = '1MB'")

        def test_next_is_clean(pg):
            assert pg.fetchval("SELECT count(*) FROM users") == 2
        """
    )
    # The flag takes no value: the path after it stays a path.
    result = project.runpytest_subprocess(
        "--pg-verify-isolation", "test_the_verifier_names_what_leaked_and_repairs.py"
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_leaks leaked: after it was rolled back, its database differs from the template:",
            "  + database setting work_mem: 1MB",
            "  ~ public.users: 3 rows, template has 2",
            "The database was replaced with a clean copy.*",
        ]
    )


def test_pg_url_under_transaction_isolation_says_what_to_do(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.makepyfile("def test_url(pg):\n    pg.url\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ['*pg.url under transaction isolation*@pytest.mark.pg(isolation="reset")*']
    )


@pytest.mark.parametrize("isolation", ["reset", "clone"])
def test_keep_failed_keeps_and_gc_drops(
    project: pytest.Pytester, runtime: Path, isolation: str
) -> None:
    project.makepyfile(
        """
        def test_passes(pg):
            pg.execute("INSERT INTO users (name) VALUES ('kept?')")
            pg.conn.commit()

        def test_fails(pg):
            pg.execute("INSERT INTO users (name) VALUES ('Dmitri Ivanov')")
            pg.conn.commit()
            assert False
        """
    )
    result = project.runpytest_subprocess(f"--pg-isolation={isolation}", "--pg-keep=failed")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*- pgsandbox -*", "database kept: postgresql://*"])
    kept = result.stdout.str().split("database kept: ")[1].split()[0]
    assert "***" in kept or "@/" in kept  # never a password in the report
    name = kept.split("/")[3].split("?")[0]

    status = pgsandbox(project, "status")
    status.stdout.fnmatch_lines([f"    kept database {name}: *test_fails"])
    url = pgsandbox(project, "url", "--dbname", name, "--reveal-password").stdout.str().strip()
    import psycopg

    with psycopg.connect(url) as conn:
        names = conn.execute("SELECT name FROM users ORDER BY id").fetchall()
    assert names == [("Alice Chen",), ("Bob Okafor",), ("Dmitri Ivanov",)]

    gc = pgsandbox(project, "gc")
    gc.stdout.fnmatch_lines([f"reaped database {name} (kept for *test_fails)"])
    assert "kept database" not in pgsandbox(project, "status").stdout.str()
    pgsandbox(project, "stop")
    assert leftovers(runtime) == []
