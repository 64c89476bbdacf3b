"""pytest-pgsql's fixtures (the API of :mod:`pytest_pgsandbox.pgsql`) on the plugin's engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any

import pytest

from pytest_pgsandbox._engine.servers.base import PgServer
from pytest_pgsandbox._plugin.fixtures import _attempt
from pytest_pgsandbox._plugin.fixtures import _sandbox

if TYPE_CHECKING:
    from pytest_pgsandbox._engine.templates.template import PgTemplate


@pytest.fixture(scope="session")
def database_uri(
    pg_server: PgServer, pg_template: PgTemplate | None, request: pytest.FixtureRequest
) -> str:
    """The SQLAlchemy URL of this worker's database under reset isolation (pytest-pgsql's
    session-wide database). Engines made on it serve ``postgresql_db``-style fixtures, which
    put it back after every test."""
    sandbox = _sandbox(request.config)
    db = _attempt(
        pg_server, "could not prepare the worker's reset database", sandbox.reset, pg_template
    )
    return str(db.info.url(driver="psycopg"))


@pytest.fixture
def postgresql_db(request: pytest.FixtureRequest) -> Iterator[Any]:
    """pytest-pgsql's engine-backed database: ``.engine``, ``.session``, helpers, ``.time``.
    Commits allowed; rows, ALTERs, dropped tables and settings are all put back afterwards
    (reset isolation)."""
    from pytest_pgsandbox.pgsql import PostgreSQLTestDB

    yield from PostgreSQLTestDB.serve(request, "pg_engine")


@pytest.fixture
def transacted_postgresql_db(request: pytest.FixtureRequest) -> Iterator[Any]:
    """pytest-pgsql's database on one connection in a transaction rolled back afterwards:
    ``.connection``, ``.session`` (its commits are savepoints), helpers, ``.time``."""
    from pytest_pgsandbox.pgsql import TransactedPostgreSQLTestDB

    yield from TransactedPostgreSQLTestDB.serve(request, "pg_engine")
