"""pytest-postgresql's test_loader.py, behaviour for behaviour: what ``load=`` accepts (a
callable, ``"module:function"``, ``"module.function"``, a deeper import path, a ``Path`` to a
SQL file, an async callable), each proven by what it loads into a real template."""

from __future__ import annotations

from pathlib import Path

import pytest

SQL_DIR = Path(__file__).parent / "sql"

TESTS = """
from pathlib import Path

from pytest_pgsandbox.postgresql import factories
from loader import load_database

SQL = Path({sql!r})

by_callable = factories.postgresql_proc(load=[load_database])
by_colon = factories.postgresql_proc(load=["loader:load_database"])
by_dot = factories.postgresql_proc(load=["loader.load_database"])
by_deep_path = factories.postgresql_proc(load=["pkg.sub.mod:load_database"])
by_sql = factories.postgresql_proc(load=[SQL])
by_sql_string = factories.postgresql_proc(load=[str(SQL)])
by_async = factories.postgresql_proc(load=["pkg.sub.mod:load_async"])
c_callable = factories.postgresql("by_callable")
c_colon = factories.postgresql("by_colon")
c_dot = factories.postgresql("by_dot")
c_deep = factories.postgresql("by_deep_path")
c_sql = factories.postgresql("by_sql")
c_sql_string = factories.postgresql("by_sql_string")
c_async = factories.postgresql("by_async")

STORIES = "SELECT count(*) FROM stories"


def test_callable(c_callable):
    assert c_callable.execute(STORIES).fetchone() == (4,)


def test_colon_path(c_colon):
    assert c_colon.execute(STORIES).fetchone() == (4,)


def test_dot_path(c_dot):
    assert c_dot.execute(STORIES).fetchone() == (4,)


def test_deeply_nested_import_path(c_deep):
    assert c_deep.execute(STORIES).fetchone() == (1,)


def test_sql_path(c_sql):
    assert c_sql.execute("SELECT * FROM test").fetchall() == [(1, 2, "c")]


def test_sql_string(c_sql_string):
    assert c_sql_string.execute("SELECT count(*) FROM test").fetchone() == (1,)


def test_async_loader(c_async):
    assert c_async.execute("SELECT name FROM stories").fetchall() == [("async",)]
"""

MOD = """
import psycopg


def load_database(**kwargs):
    with psycopg.connect(**kwargs) as conn:
        conn.execute("CREATE TABLE stories (id serial PRIMARY KEY, name varchar)")
        conn.execute("INSERT INTO stories (name) VALUES ('deep')")


async def load_async(**kwargs):
    async with await psycopg.AsyncConnection.connect(**kwargs) as conn:
        await conn.execute("CREATE TABLE stories (id serial PRIMARY KEY, name varchar)")
        await conn.execute("INSERT INTO stories (name) VALUES ('async')")
"""


def test_every_form_loads(ppg: pytest.Pytester) -> None:
    pkg = ppg.mkpydir("pkg")
    (pkg / "sub").mkdir()
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text(MOD)
    ppg.makepyfile(test_loaders=TESTS.format(sql=str(SQL_DIR / "one_row.sql")))
    ppg.runpytest_subprocess().assert_outcomes(passed=7)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("'nowhere:load'", "*load='nowhere:load': could not import it (ModuleNotFoundError*"),
        ("Path('missing.sql')", "*no such SQL file:*missing.sql*"),
        ("42", "*load= got 42: give a Path to a .sql file, a callable*"),
    ],
)
def test_a_bad_item_says_what_it_takes(ppg: pytest.Pytester, item: str, message: str) -> None:
    ppg.makepyfile(
        f"""
        from pathlib import Path
        from pytest_pgsandbox.postgresql import factories

        proc = factories.postgresql_proc(load=[{item}])
        client = factories.postgresql("proc")

        def test_it(client):
            pass
        """
    )
    result = ppg.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([message])


def test_a_failing_loader_names_itself(ppg: pytest.Pytester) -> None:
    ppg.makepyfile(
        """
        from pytest_pgsandbox.postgresql import factories

        def broken(**kwargs):
            raise RuntimeError("no schema today")

        proc = factories.postgresql_proc(load=[broken])
        client = factories.postgresql("proc")

        def test_it(client):
            pass
        """
    )
    result = ppg.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*load=test_a_failing_loader_names_itself:broken raised Runtime*"])
