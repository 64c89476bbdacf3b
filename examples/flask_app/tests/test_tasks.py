import pytest


def test_the_template_holds_the_migrated_schema(pg):
    assert pg.fetchval("SELECT version_num FROM alembic_version") == "0001"
    assert pg.fetchval("SELECT title FROM tasks") == "Read the docs"


def test_a_new_task_is_listed(client):
    assert client.post("/tasks", json={"title": "Water the plants"}).status_code == 201
    assert client.get("/tasks").json == {"open": ["Read the docs", "Water the plants"]}


def test_the_previous_test_left_nothing(client, pg):
    assert client.get("/tasks").json == {"open": ["Read the docs"]}
    assert pg.fetchval("SELECT count(*) FROM tasks") == 1


def test_a_missing_task_is_404(client):
    assert client.post("/tasks/999/done").status_code == 404


@pytest.mark.pg(isolation="reset")
def test_finishing_a_task_commits_for_real(client_on_own_engine, pg):
    assert client_on_own_engine.post("/tasks/1/done").json == {"id": 1, "done": True}
    assert pg.fetchval("SELECT done FROM tasks WHERE id = 1") is True


@pytest.mark.pg(isolation="reset")
def test_and_is_put_back_afterwards(client_on_own_engine):
    assert client_on_own_engine.get("/tasks").json == {"open": ["Read the docs"]}
