"""Tests that start from the scenario shop/demo (.pgsandbox/scenarios/shop/demo)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from shop_app.models import Order
from shop_app.models import User
from shop_app.testing import ItemFactory
from shop_app.testing import OrderFactory
from sqlalchemy import select

pytestmark = pytest.mark.pg(scenario="shop/demo")


def test_the_demo_customers(pg_session):
    users = pg_session.scalars(select(User).order_by(User.id)).all()
    assert [(u.name, u.plan) for u in users] == [
        ("Ada Lovelace", "pro"),
        ("Grace Hopper", "free"),
        ("Katherine Johnson", "pro"),
    ]
    assert [len(u.orders) for u in users] == [2, 0, 1]
    assert pg_session.get(Order, 1).total == Decimal("124.00")


def test_factories_add_rows_on_top(pg_factories, pg_session):
    grace = pg_session.scalars(select(User).where(User.name == "Grace Hopper")).one()
    order = OrderFactory(user=grace)
    assert order.id == 4  # the scenario's sequences go on where the export left them
    ItemFactory(order=order, price=Decimal("1.00"), quantity=3)
    assert order.total == Decimal("3.00")


@pytest.mark.pg(isolation="clone")
def test_the_app_sees_it_through_its_own_connections(pg):
    import sqlalchemy

    engine = sqlalchemy.create_engine(pg.url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        assert conn.scalar(sqlalchemy.text("SELECT count(*) FROM items")) == 5
        conn.execute(sqlalchemy.text("DELETE FROM items"))
    engine.dispose()
