"""Under clone isolation any code may use pg.url and commit; the next test never sees it."""

import subprocess
import sys
import threading

import psycopg
import pytest

pytestmark = pytest.mark.pg(isolation="clone")

CHECK = "SELECT count(*) FROM people"


@pytest.fixture(autouse=True)
def starts_clean(pg):
    assert pg.fetchval(CHECK) == 1  # only the seeded row
    assert pg.fetchval("SELECT nextval('people_id_seq')") == 2
    pg.conn.rollback()


def test_commit_from_another_connection(pg):
    with psycopg.connect(pg.url) as app:
        app.execute("INSERT INTO people (name) VALUES ('Bob Okafor')")
    assert pg.fetchval(CHECK) == 2


def test_update_delete_truncate(pg):
    with psycopg.connect(pg.url, autocommit=True) as app:
        app.execute("UPDATE people SET name = 'changed'")
        app.execute("DELETE FROM people")
        app.execute("TRUNCATE people RESTART IDENTITY")
    assert pg.fetchval(CHECK) == 0


def test_ddl(pg):
    pg.execute("ALTER TABLE people ADD COLUMN age int")
    pg.execute("CREATE TABLE extra (id int)")
    pg.execute("DROP TABLE pets")
    pg.conn.commit()


def test_sequences_and_a_thread(pg):
    def work():
        with psycopg.connect(pg.url) as app:
            for _ in range(5):
                app.execute("INSERT INTO people (name) VALUES ('Carmen Ruiz')")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert pg.fetchval(CHECK) == 6


def test_a_subprocess(pg):
    code = (
        "import psycopg, sys\n"
        "with psycopg.connect(sys.argv[1]) as c:\n"
        "    c.execute(\"INSERT INTO people (name) VALUES ('Dmitri Volkov')\")\n"
    )
    subprocess.run([sys.executable, "-c", code, pg.url], check=True, timeout=60)
    assert pg.fetchval(CHECK) == 2


def test_leaves_a_connection_open(pg):
    app = psycopg.connect(pg.url)
    app.execute("INSERT INTO people (name) VALUES ('Emma Larsen')")
    app.commit()
    # not closed: teardown ends it before dropping the copy
