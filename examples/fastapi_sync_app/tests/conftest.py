"""The app's get_db dependency, overridden: no change to the app."""

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session
from sqlmodel import create_engine

from library_app.db import get_db
from library_app.main import app


@pytest.fixture
def client(pg_session):
    """Transaction isolation (the default): every request gets the test's session, whose
    commits are savepoints rolled back after the test. The app's own engine (made at import,
    from DATABASE_URL) is never used."""
    app.dependency_overrides[get_db] = lambda: pg_session
    with TestClient(app) as client:
        yield client
    app.dependency_overrides.clear()


@pytest.fixture
def client_on_own_engine(pg):
    """Reset isolation: requests get sessions on an engine of their own on the test's
    database, as in production; commits are real, and pgsandbox puts the rows back."""
    engine = create_engine(pg.url.replace("postgresql://", "postgresql+psycopg://", 1))

    def get_db_on_test_database():
        with Session(engine) as session:
            yield session

    app.dependency_overrides[get_db] = get_db_on_test_database
    with TestClient(app) as client:
        yield client
    app.dependency_overrides.clear()
    engine.dispose()
