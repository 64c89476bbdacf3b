"""The hooks pgsandbox calls in a project's ``conftest.py`` (registered by ``pytest_addhooks``)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec(firstresult=True)
def pytest_pgsandbox_migration_data(config: pytest.Config) -> dict[str, Any] | None:
    """Rows to put in around revisions of the Alembic history, in pytest-alembic's shape::

        def pytest_pgsandbox_migration_data():
            return {
                "before_revision_data": {
                    "0002": [{"__tablename__": "users", "name": "Alice Chen"}],
                },
                "at_revision_data": {"0002": check_names_were_kept},
            }

    ``before_revision_data[REV]`` goes in right before the upgrade to REV, and
    ``at_revision_data[REV]`` right after it: a row (``__tablename__``, optional
    ``__schema__``, the columns), a callable given the SQLAlchemy ``Connection`` (which may
    insert or assert), or a list of those. The walk of ``check_migrations`` (its ``upgrade``
    check) and ``pg_migrations.upgrade()`` use it; see docs/migrations.md.
    """
