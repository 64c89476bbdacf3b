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

import importlib
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from pytest_pgsandbox.postgresql import factories
    from pytest_pgsandbox.postgresql._proc import PostgreSQLProc
    from pytest_pgsandbox.postgresql.janitor import AsyncDatabaseJanitor
    from pytest_pgsandbox.postgresql.janitor import DatabaseJanitor

__all__ = ["AsyncDatabaseJanitor", "DatabaseJanitor", "PostgreSQLProc", "factories"]

# Imported when first used: the plugin reads this package's options at every pytest start,
# and the drivers behind these names are not needed for that.
_WHERE = {
    "factories": ("pytest_pgsandbox.postgresql.factories", None),
    "PostgreSQLProc": ("pytest_pgsandbox.postgresql._proc", "PostgreSQLProc"),
    "AsyncDatabaseJanitor": ("pytest_pgsandbox.postgresql.janitor", "AsyncDatabaseJanitor"),
    "DatabaseJanitor": ("pytest_pgsandbox.postgresql.janitor", "DatabaseJanitor"),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _WHERE[name]
    found = importlib.import_module(module)
    value = found if attribute is None else getattr(found, attribute)
    globals()[name] = value
    return value
