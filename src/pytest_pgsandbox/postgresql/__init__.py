"""pytest-postgresql's API on pytest-pgsandbox: a suite switches by changing one import.

::

    from pytest_pgsandbox.postgresql import factories   # was: from pytest_postgresql import ...
    from pytest_pgsandbox.postgresql import DatabaseJanitor

``factories`` makes ``postgresql_proc``, ``postgresql_noproc``, ``postgresql`` and
``postgresql_async`` fixtures; the ``pytest_postgresql`` setting (``pg_pytest_postgresql =
true``) also provides the default ``postgresql_proc``, ``postgresql_noproc``, ``postgresql`` and
``postgresql_async`` fixtures. See ``docs/migrating.md``.
"""

from __future__ import annotations

from pytest_pgsandbox.postgresql import factories
from pytest_pgsandbox.postgresql._proc import PostgreSQLProc
from pytest_pgsandbox.postgresql.janitor import AsyncDatabaseJanitor
from pytest_pgsandbox.postgresql.janitor import DatabaseJanitor

__all__ = ["AsyncDatabaseJanitor", "DatabaseJanitor", "PostgreSQLProc", "factories"]
