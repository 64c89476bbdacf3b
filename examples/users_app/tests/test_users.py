from sqlalchemy import func
from sqlalchemy import select

from users_app.models import User


def count(session):
    return session.scalar(select(func.count()).select_from(User))


def test_the_five_seeded_users_are_there(pg_session):
    assert count(pg_session) == 5
    names = pg_session.scalars(select(User.name).order_by(User.name)).all()
    assert names[0] == "Alice Chen"


def test_adding_one_makes_six(pg_session):
    pg_session.add(User(name="Farah Haddad", email="farah.haddad@example.com"))
    pg_session.commit()  # a savepoint: kept inside this test, gone afterwards
    assert count(pg_session) == 6
