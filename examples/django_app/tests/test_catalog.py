"""Plain ``db`` tests: one transaction per test, rolled back (Django's TestCase)."""

from __future__ import annotations

import pytest
from catalog.models import Category
from catalog.models import Product
from django.core.cache import cache
from django.db import connection
from orders.models import Order

pytestmark = pytest.mark.django_db


def test_the_data_migration_rows_are_there() -> None:
    assert sorted(Category.objects.values_list("name", flat=True)) == ["books", "games", "music"]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_an_order_is_rolled_back_after_the_test(django_user_model: type, n: int) -> None:
    assert Order.objects.count() == 0
    user = django_user_model.objects.create_user(username=f"ann{n}")
    product = Product.objects.create(
        category=Category.objects.get(name="books"), name="SQL", price_cents=100 * n
    )
    Order.objects.create(customer=user, product=product, quantity=n)
    assert Order.objects.get().quantity == n


def test_the_database_cache_table_exists() -> None:
    cache.set("greeting", "hello")
    assert cache.get("greeting") == "hello"


def test_the_test_database_is_a_copy_of_a_pgsandbox_template(worker_id: str) -> None:
    name = connection.settings_dict["NAME"]
    assert name == ("test_shop" if worker_id == "master" else f"test_shop_{worker_id}")
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_database WHERE datistemplate "
            "AND datname LIKE 'pgsandbox_tpl_%%'"
        )
        assert cur.fetchone()[0] >= 2  # one per alias
    assert connection.settings_dict["HOST"] != "db.example.invalid"
