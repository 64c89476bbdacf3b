"""Which database fixtures a test uses, and how several of them share its one database.

A test has one database. pytest-pgsql's suites ask for ``postgresql_db`` and
``transacted_postgresql_db`` in one test; such fixtures share it when their isolation allows
(``fixtures.database_for`` decides, and names the fixtures when it cannot).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

# Database fixtures that need reset isolation (their database takes commits): a test that
# uses one gets reset isolation for all its database fixtures, which then share a database.
RESET_FIXTURES = {"postgresql_db"}
# Fixtures that give a test its database (create_fixture adds the names it makes). A test
# that uses pg_engine without any of them gets pg too, as pytest-pgsql's engine needed none.
DATABASE_FIXTURES = {
    "pg",
    "pg_conn",
    "pg_session",
    "pg_async_conn",
    "pg_async_session",
    "pg_asyncpg",
    "pg_asyncpg_pool",
    "postgresql_db",
    "transacted_postgresql_db",
}


def add_database_to_engine_tests(items: Sequence[pytest.Item]) -> None:
    """Give ``pg`` to the tests that use ``pg_engine`` and no database fixture."""
    for item in items:
        names = getattr(item, "fixturenames", None)
        if names is not None and "pg_engine" in names and not DATABASE_FIXTURES.intersection(names):
            names.append("pg")
