import datetime as dt

import pytest


@pytest.mark.asyncio
@pytest.mark.parametrize("n", [1, 2])
async def test_create_through_the_overridden_session(client_on_test_session, n):
    response = await client_on_test_session.post("/notes", json={"title": f"note {n}"})
    assert response.status_code == 201
    count = await client_on_test_session.get("/notes/count")
    assert count.json() == {"count": 1}  # each run starts empty: the last one rolled back


@pytest.mark.asyncio
@pytest.mark.pg(isolation="clone")
@pytest.mark.parametrize("n", [1, 2])
async def test_create_through_the_apps_own_engine(client_on_own_engine, pg, n):
    response = await client_on_own_engine.post("/notes", json={"title": f"note {n}"})
    assert response.status_code == 201
    assert pg.fetchval("SELECT count(*) FROM notes") == 1  # committed: other connections see it


@pytest.mark.asyncio
@pytest.mark.pg(isolation="clone")
async def test_frozen_time_reaches_the_apps_connections(client_on_own_engine, pg):
    with pg.freeze_time("2030-06-01 12:00:00"):
        response = await client_on_own_engine.post("/notes", json={"title": "later"})
    created = dt.datetime.fromisoformat(response.json()["created_at"])
    assert created == dt.datetime(2030, 6, 1, 12, tzinfo=dt.timezone.utc)
