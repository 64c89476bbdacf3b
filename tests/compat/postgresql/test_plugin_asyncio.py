"""pytest-postgresql's test_plugin_asyncio.py checks that async fixtures work without the user
configuring the event loop (its Windows selector-loop hooks). Here: ``postgresql_async`` runs
with pytest-asyncio's defaults, in strict and auto mode, under any loop scope of the test."""

from __future__ import annotations

import pytest

TESTS = """
import pytest
from pytest_pgsandbox.postgresql import factories

proc = factories.postgresql_proc()
postgresql_async = factories.postgresql_async("proc")


@pytest.mark.asyncio
async def test_function_loop(postgresql_async):
    cur = await postgresql_async.execute("SELECT 1")
    assert await cur.fetchone() == (1,)


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop(postgresql_async):
    await postgresql_async.execute("CREATE TABLE t (id int)")
    await postgresql_async.commit()
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_async_client_without_loop_configuration(
    pytester: pytest.Pytester, runtime: object, mode: str
) -> None:
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess(
        "-o", f"asyncio_mode={mode}", "-o", "asyncio_default_fixture_loop_scope=function"
    )
    result.assert_outcomes(passed=2)
