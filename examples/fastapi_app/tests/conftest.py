import httpx
import pytest_asyncio
from notes_app.app import make_app


@pytest_asyncio.fixture
async def client_on_test_session(pg_async_session):
    """Transaction isolation: the app's sessions are replaced by the test's, whose commits are
    savepoints rolled back after the test."""
    app = make_app("postgresql+psycopg://unused/unused")  # never connects: overridden below

    async def override():
        yield pg_async_session

    app.dependency_overrides[app.state.get_session] = override
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://notes"
    ) as client:
        yield client
    await app.state.engine.dispose()


@pytest_asyncio.fixture
async def client_on_own_engine(pg):
    """Clone isolation: the app opens its own engine on the test's database, as in
    production, and commits for real; the database is the test's alone."""
    app = make_app(pg.url.replace("postgresql://", "postgresql+psycopg://", 1))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://notes"
    ) as client:
        yield client
    await app.state.engine.dispose()
