"""pytest-pgsql's exceptions (``pytest_pgsql.errors``), each a :class:`PgSandboxError` too.

::

    PgSandboxError
     └── Error
          └── DatabaseRestoreFailedError
               ├── DatabaseIsDirtyError      reset_db() found committed schema changes
               └── NoSnapshotAvailableError  no snapshot to restore to
"""

from __future__ import annotations

from typing import Any

from pytest_pgsandbox.errors import PgSandboxError

__all__ = [
    "DatabaseIsDirtyError",
    "DatabaseRestoreFailedError",
    "Error",
    "NoSnapshotAvailableError",
]


class Error(PgSandboxError):
    """The base class of pytest-pgsql's errors."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])


class DatabaseRestoreFailedError(Error):
    """The database could not be put back as it was."""


class DatabaseIsDirtyError(DatabaseRestoreFailedError):
    """Couldn't restore the database to its original state due to committed changes."""

    def __init__(self, message: str | None = None, state_details: Any = None) -> None:
        super().__init__(message)
        self.state_details = state_details

    @classmethod
    def from_snapshots(
        cls, original: dict[str, Any], current: dict[str, Any]
    ) -> DatabaseIsDirtyError:
        """The error for a database whose state ``current`` differs from ``original``
        (both made by ``create_database_snapshot``); ``state_details`` says how."""
        details = {
            key: {
                "added": sorted(set(map(_key, current[key])) - set(map(_key, original[key]))),
                "removed": sorted(set(map(_key, original[key])) - set(map(_key, current[key]))),
            }
            for key in ("schemas", "tables", "extensions")
        }
        shown = "; ".join(
            f"{key} {how}: {', '.join(names)}"
            for key, change in details.items()
            for how, names in change.items()
            if names
        )
        return cls(
            "the database differs from its snapshot after the rollback, so changes were "
            f"committed: {shown or 'tables replaced'}",
            details,
        )


def _key(item: Any) -> str:
    if isinstance(item, dict):
        return f"{item['schema_name']}.{item['table_name']}"
    return str(item)


class NoSnapshotAvailableError(DatabaseRestoreFailedError):
    """Can't restore the database - no snapshot was given to the class."""
