"""Factories for the shop's tests, with factory_boy and with polyfactory.

None of them names a session: the ``pg_factories`` fixture binds them to the test's.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import factory
from polyfactory import Use
from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory

from shop_app.models import Item
from shop_app.models import Order
from shop_app.models import User


class UserFactory(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        model = User
        sqlalchemy_session_persistence = "flush"  # rows get their ids at once

    name = factory.Faker("name")
    email = factory.Sequence(lambda n: f"user{n}@example.com")
    plan = factory.Iterator(["free", "pro"])


class OrderFactory(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        model = Order
        sqlalchemy_session_persistence = "flush"

    user = factory.SubFactory(UserFactory)
    status = "paid"


class ItemFactory(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        model = Item
        sqlalchemy_session_persistence = "flush"

    order = factory.SubFactory(OrderFactory)
    sku = factory.Faker("bothify", text="SKU-####")
    quantity = factory.Faker("random_int", min=1, max=5)
    price = factory.Faker("pydecimal", left_digits=3, right_digits=2, positive=True)


class UserPoly(SQLAlchemyFactory[User]):
    __set_relationships__ = False
    __check_model__ = False

    id = None  # the database gives it
    name = Use(lambda: UserPoly.__faker__.name())
    email = Use(lambda: UserPoly.__faker__.unique.email())
    plan = "free"
    created_at = None  # the database's default


class ItemPoly(SQLAlchemyFactory[Item]):
    __set_relationships__ = False
    __set_foreign_keys__ = False
    __check_model__ = False

    id = None
    sku = Use(lambda: ItemPoly.__faker__.bothify("SKU-####"))
    quantity = Use(lambda: ItemPoly.__random__.randint(1, 5))
    price = Use(lambda: Decimal(ItemPoly.__random__.randint(100, 99999)) / 100)


class OrderPoly(SQLAlchemyFactory[Order]):
    __set_relationships__ = False
    __set_foreign_keys__ = False
    __check_model__ = False

    id = None
    status = "paid"

    @classmethod
    def with_items(cls, user: User, count: int, **kwargs: Any) -> Order:
        """An order of ``user`` with ``count`` items, saved."""
        return cls.create_sync(user=user, items=ItemPoly.batch(count), **kwargs)
