from __future__ import annotations

import pytest
from chinook.data import Store
from chinook.data import generate


@pytest.fixture(scope="session")
def store() -> Store:
    """The rows the template was seeded with, for working out what a query must return."""
    return generate()
