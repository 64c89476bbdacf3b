"""A project written for pytest-pgsql: its tests ask for both database fixtures at once."""

import pytest


@pytest.fixture(params=["postgresql_db", "transacted_postgresql_db"])
def either_db(request, postgresql_db, transacted_postgresql_db):
    """One test, run once on each fixture (both are set up every time)."""
    return postgresql_db if request.param == "postgresql_db" else transacted_postgresql_db
