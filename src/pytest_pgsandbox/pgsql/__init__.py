"""pytest-pgsql's API on SQLAlchemy 2 and psycopg 3.

Switch a pytest-pgsql suite over by replacing the package and one import::

    import pytest_pgsandbox.pgsql as pytest_pgsql

(or install ``pytest-pgsandbox[pgsql-shim]`` and keep ``import pytest_pgsql``). pytest-pgsql's
modules are here under the same names: :mod:`.database`, :mod:`.time`, :mod:`.ext` and
:mod:`.errors`, and their public names are re-exported from this package, as pytest-pgsql's
``__init__`` did.

The fixtures ``postgresql_db``, ``transacted_postgresql_db``, ``database_uri`` and
``pg_engine`` come with the plugin. Unlike pytest-pgsql's, ``postgresql_db`` leaves nothing
behind: it runs on reset isolation, so committed rows, ALTERs, dropped tables and changed
settings are all put back, and its frozen time reaches ``now()`` in defaults and triggers.
A test may use both fixtures; they then share one database under reset isolation.
"""

from __future__ import annotations

from pytest_pgsandbox.pgsql import database
from pytest_pgsandbox.pgsql import errors
from pytest_pgsandbox.pgsql import ext
from pytest_pgsandbox.pgsql import time
from pytest_pgsandbox.pgsql.database import PostgreSQLTestDB
from pytest_pgsandbox.pgsql.database import PostgreSQLTestDBBase
from pytest_pgsandbox.pgsql.database import TransactedPostgreSQLTestDB
from pytest_pgsandbox.pgsql.database import create_database_snapshot
from pytest_pgsandbox.pgsql.errors import DatabaseIsDirtyError
from pytest_pgsandbox.pgsql.errors import DatabaseRestoreFailedError
from pytest_pgsandbox.pgsql.errors import Error
from pytest_pgsandbox.pgsql.errors import NoSnapshotAvailableError
from pytest_pgsandbox.pgsql.ext import create_engine_fixture
from pytest_pgsandbox.pgsql.time import SQLAlchemyFreezegun
from pytest_pgsandbox.pgsql.time import freeze_time

__all__ = [
    "DatabaseIsDirtyError",
    "DatabaseRestoreFailedError",
    "Error",
    "NoSnapshotAvailableError",
    "PostgreSQLTestDB",
    "PostgreSQLTestDBBase",
    "SQLAlchemyFreezegun",
    "TransactedPostgreSQLTestDB",
    "create_database_snapshot",
    "create_engine_fixture",
    "database",
    "errors",
    "ext",
    "freeze_time",
    "time",
]
