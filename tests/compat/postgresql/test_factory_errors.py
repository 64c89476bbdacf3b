"""pytest-postgresql's test_factory_errors.py, behaviour for behaviour: without pytest-asyncio,
making a ``postgresql_async`` fixture works and using one fails with what to install."""

from __future__ import annotations

import pytest

NO_ASYNCIO = """
import sys

sys.modules["pytest_asyncio"] = None  # as if it were not installed
"""


def test_factory_creation_succeeds_and_use_fails_clearly(
    pytester: pytest.Pytester, runtime: object
) -> None:
    pytester.makeconftest(
        NO_ASYNCIO
        + """
from pytest_pgsandbox.postgresql import factories

proc = factories.postgresql_proc()
postgresql = factories.postgresql("proc")
postgresql_async = factories.postgresql_async("proc")
"""
    )
    pytester.makepyfile(
        """
        def test_sync_still_works(postgresql):
            assert postgresql.execute("SELECT 1").fetchone() == (1,)

        def test_async_fixture(postgresql_async):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:asyncio")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*postgresql_async is an async fixture and needs pytest-asyncio*"])


def test_a_client_of_something_else_is_an_error(pytester: pytest.Pytester, runtime: object) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_pgsandbox.postgresql import factories

        @pytest.fixture(scope="session")
        def plain():
            return "not a server"

        client = factories.postgresql("plain")

        def test_it(client):
            pass
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'plain' is a str, not a fixture made by*"])


def test_an_unknown_isolation_is_refused_where_the_factory_is_called() -> None:
    from pytest_pgsandbox.postgresql import factories

    with pytest.raises(ValueError, match="accepted values are clone, reset, transaction"):
        factories.postgresql("postgresql_proc", isolation="snapshot")
