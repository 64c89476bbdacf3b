"""pytest-postgresql's test_template_database.py, behaviour for behaviour: ``load=`` builds a
template once, and every test starts from a fresh copy of it."""

from __future__ import annotations

import re

import pytest

TESTS = """
import pytest

from pytest_pgsandbox.postgresql.factories import postgresql, postgresql_async, postgresql_proc
from loader import load_database

postgresql_proc_with_template = postgresql_proc(
    port=21987, dbname="stories_templated", load=[load_database]
)
postgresql_template = postgresql("postgresql_proc_with_template", dbname="stories_templated")
async_postgresql_template = postgresql_async(
    "postgresql_proc_with_template", dbname="stories_templated"
)


@pytest.mark.parametrize("_", range(5))
def test_template_database(postgresql_template, _):
    with postgresql_template.cursor() as cur:
        cur.execute("SELECT * FROM stories")
        assert len(cur.fetchall()) == 4
        cur.execute("TRUNCATE stories")
        cur.execute("SELECT * FROM stories")
        assert len(cur.fetchall()) == 0
    postgresql_template.commit()


@pytest.mark.asyncio
@pytest.mark.parametrize("_", range(5))
async def test_template_database_async(async_postgresql_template, _):
    async with async_postgresql_template.cursor() as cur:
        await cur.execute("SELECT * FROM stories")
        assert len(await cur.fetchall()) == 4
        await cur.execute("TRUNCATE stories")
        await async_postgresql_template.commit()


def test_port_is_the_one_asked_for(postgresql_proc_with_template):
    assert postgresql_proc_with_template.port == 21987
    assert postgresql_proc_with_template.host == "127.0.0.1"
"""


def test_every_test_starts_from_the_template(ppg: pytest.Pytester) -> None:
    ppg.makepyfile(test_template=TESTS)
    result = ppg.runpytest_subprocess()
    result.assert_outcomes(passed=11)
    result.stdout.fnmatch_lines(["*port=21987 (from postgresql_proc_with_template*"])


def test_the_template_is_built_once_per_input(ppg: pytest.Pytester) -> None:
    """A second run reuses the template; a changed loader builds a new one."""
    ppg.makepyfile(
        """
        from pytest_pgsandbox.postgresql import factories
        from loader import load_database

        proc = factories.postgresql_proc(load=[load_database])
        client = factories.postgresql("proc")

        def test_name(proc, client):
            print("TEMPLATE", proc.template_dbname, proc.template.reused)
            assert client.execute("SELECT count(*) FROM stories").fetchone() == (4,)
        """
    )
    first = ppg.runpytest_subprocess("-s", "--pg-reuse")
    first.assert_outcomes(passed=1)
    second = ppg.runpytest_subprocess("-s", "--pg-reuse")
    second.assert_outcomes(passed=1)
    found = re.search(r"TEMPLATE (\S+) False", first.stdout.str())
    assert found, first.stdout.str()
    name = found.group(1)
    assert f"TEMPLATE {name} True" in second.stdout.str()
    (ppg.path / "loader.py").write_text(
        (ppg.path / "loader.py").read_text().replace("'Star Wars'", "'Dune'")
    )
    third = ppg.runpytest_subprocess("-s", "--pg-reuse")
    third.assert_outcomes(passed=1)
    rebuilt = re.search(r"TEMPLATE (\S+) False", third.stdout.str())
    assert rebuilt, third.stdout.str()
    assert rebuilt.group(1) != name
