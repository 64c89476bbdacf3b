"""Two ways to point Flask-SQLAlchemy's db at the test's database, public API only."""

import pytest
from sqlalchemy.orm import scoped_session
from sqlalchemy.orm import sessionmaker

from tasks_app import create_app
from tasks_app import db


@pytest.fixture
def client(pg, pg_engine, monkeypatch):
    """Transaction isolation (the default): db.session is a session on the test's connection,
    so the app's commits are savepoints, rolled back after the test.

    db.session is a public attribute that the app, the models' query property, db.get_or_404
    and db.paginate all read; monkeypatch puts the app's own back afterwards.
    """
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://unused"})
    with pg_engine.connect() as connection:
        session = scoped_session(
            sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
        )
        monkeypatch.setattr(db, "session", session)
        with app.test_client() as client:
            yield client
        session.remove()


@pytest.fixture
def client_on_own_engine(pg):
    """Reset isolation: the app's own engine, on the test's database; commits are real,
    and afterwards pgsandbox puts back what the test changed."""
    url = pg.url.replace("postgresql://", "postgresql+psycopg://", 1)
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url})
    with app.test_client() as client:
        yield client
    with app.app_context():
        db.engine.dispose()
