import pytest
from sqlmodel import func
from sqlmodel import select

from library_app.models import Book


def test_the_migration_seeded_one_book(client):
    assert [b["title"] for b in client.get("/books").json()] == ["Middlemarch"]


def test_a_new_book_is_committed_into_the_test_s_transaction(client, pg_session):
    response = client.post("/books", json={"title": "Beloved", "author": "Toni Morrison"})
    assert response.status_code == 201
    assert pg_session.exec(select(func.count()).select_from(Book)).one() == 2


def test_the_previous_test_left_nothing(client):
    assert len(client.get("/books").json()) == 1


def test_a_missing_book_is_404(client):
    assert client.get("/books/999").status_code == 404


@pytest.mark.pg(isolation="reset")
def test_the_app_s_own_engine_commits_for_real(client_on_own_engine, pg):
    client_on_own_engine.post("/books", json={"title": "Kindred", "author": "Octavia Butler"})
    assert pg.fetchval("SELECT count(*) FROM books") == 2


@pytest.mark.pg(isolation="reset")
def test_and_the_rows_are_put_back(client_on_own_engine):
    assert len(client_on_own_engine.get("/books").json()) == 1
