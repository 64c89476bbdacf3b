from __future__ import annotations

import re

from shop_app.models import Item
from shop_app.models import Order
from shop_app.models import User
from shop_app.testing import ItemFactory
from shop_app.testing import OrderFactory
from shop_app.testing import OrderPoly
from shop_app.testing import UserFactory
from shop_app.testing import UserPoly
from sqlalchemy import func
from sqlalchemy import select


def test_five_realistic_users(pg_factories, pg_session):
    users = UserFactory.create_batch(5)
    assert all(u.id is not None for u in users)  # flushed: in the database already
    stored = pg_session.scalars(select(User).order_by(User.id)).all()
    assert stored == users
    assert len({u.email for u in stored}) == 5
    assert all(re.fullmatch(r"\S+( \S+)+", u.name) for u in stored)  # "First Last"
    assert {u.plan for u in stored} == {"free", "pro"}


def test_user_orders_items_with_factory_boy(pg_factories, pg_session):
    user = UserFactory(name="Ada Lovelace")
    orders = OrderFactory.create_batch(2, user=user)
    for order in orders:
        ItemFactory.create_batch(3, order=order)
    pg_session.expire_all()
    loaded = pg_session.get(User, user.id)
    assert [len(o.items) for o in loaded.orders] == [3, 3]
    total = pg_session.scalar(
        select(func.sum(Item.price * Item.quantity)).join(Order).where(Order.user_id == user.id)
    )
    assert total == sum(o.total for o in loaded.orders)


def test_user_orders_items_with_polyfactory(pg_factories, pg_session):
    user = UserPoly.create_sync(name="Grace Hopper")
    OrderPoly.with_items(user, 2)
    OrderPoly.with_items(user, 4)
    pg_session.expire_all()
    counts = pg_session.execute(
        select(Order.id, func.count(Item.id))
        .join(Item)
        .where(Order.user_id == user.id)
        .group_by(Order.id)
        .order_by(Order.id)
    ).all()
    assert [n for _id, n in counts] == [2, 4]
    assert pg_session.get(User, user.id).name == "Grace Hopper"


def test_every_test_starts_empty(pg_session):
    assert pg_session.scalar(select(func.count()).select_from(User)) == 0
