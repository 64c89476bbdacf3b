"""Sessions written for pytest-postgresql, run on pytest-pgsandbox with the import changed.

Each test here checks, in a real pytest session (``pytester``, a subprocess, a real server),
one behaviour that pytest-postgresql's own user-facing tests check.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SQL_DIR = Path(__file__).parent / "sql"

# pytest-postgresql's test conftest, with the import changed (the SQL files are ours).
CONFTEST = """
from pathlib import Path

from pytest_pgsandbox.postgresql import factories

TEST_SQL_FILE = Path({sql_dir!r}) / "test.sql"
TEST_SQL_FILE2 = Path({sql_dir!r}) / "test2.sql"

postgresql_proc2 = factories.postgresql_proc(port=None, load=[TEST_SQL_FILE, TEST_SQL_FILE2])
postgresql2 = factories.postgresql("postgresql_proc2", dbname="test-db")
postgresql_load_1 = factories.postgresql("postgresql_proc2")
postgresql2_async = factories.postgresql_async("postgresql_proc2", dbname="test-db")
postgresql_load_1_async = factories.postgresql_async("postgresql_proc2")
"""

LOADER = '''
import psycopg


def load_database(**kwargs):
    """Prepare the database for tests."""
    conn = psycopg.connect(**kwargs)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE stories (id serial PRIMARY KEY, name varchar);")
        cur.execute(
            "INSERT INTO stories (name) VALUES"
            "('Silmarillion'), ('Star Wars'), ('The Expanse'), ('Battlestar Galactica')"
        )
        conn.commit()
    conn.close()
'''

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n{extra}"


@pytest.fixture(autouse=True)
def _not_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sessions these tests start are xdist workers only when they run xdist themselves
    (an inherited PYTEST_XDIST_WORKER would change the database names they expect)."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)


@pytest.fixture
def ppg(pytester: pytest.Pytester, runtime: Path) -> pytest.Pytester:
    """A project with pytest-postgresql's test conftest (import changed) and its loader."""
    pytester.makeconftest(CONFTEST.format(sql_dir=str(SQL_DIR)))
    pytester.makepyfile(loader=LOADER)
    pytester.makeini(INI.format(extra=""))
    return pytester
