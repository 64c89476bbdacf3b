"""The Lambda handler end to end: a real secret, a real database, its own connection."""

from __future__ import annotations

import json

import pytest
from orders_lambda.handler import handler

# The handler connects on its own: it needs a database other connections can see.
pytestmark = pytest.mark.pg(isolation="clone")


@pytest.fixture(autouse=True)
def db_secret(pg_secret, monkeypatch):
    monkeypatch.setenv("DB_SECRET_ARN", pg_secret.arn)
    return pg_secret


def orders_of(response):
    assert response["statusCode"] == 200
    return json.loads(response["body"])["orders"]


def test_returns_the_orders_the_test_inserted(pg):
    pg.execute(
        "INSERT INTO orders (customer, item, quantity) "
        "VALUES ('ada', 'tea', 2), ('bob', 'tea', 5), ('ada', 'cake', 1)"
    )
    pg.conn.commit()  # the handler's connection sees committed rows only
    rows = pg.fetchall("SELECT id, item, quantity FROM orders WHERE customer = 'ada'")
    assert orders_of(handler({"customer": "ada"}, None)) == [
        {"id": id_, "item": item, "quantity": qty} for id_, item, qty in rows
    ]


def test_records_an_order(pg):
    orders = orders_of(handler({"customer": "grace", "item": "coffee", "quantity": 3}, None))
    assert pg.fetchall("SELECT id, customer, item, quantity FROM orders") == [
        (orders[0]["id"], "grace", "coffee", 3)
    ]


def test_the_secret_is_in_rds_format(pg, db_secret):
    stored = db_secret.client.get_secret_value(SecretId=db_secret.name)["SecretString"]
    value = json.loads(stored)
    assert value["engine"] == "postgres"
    assert value["dbname"] == pg.dbname
    assert sorted(value) == ["dbname", "engine", "host", "password", "port", "username"]
    assert "password" not in repr(db_secret)
    assert db_secret.arn.startswith(f"arn:aws:secretsmanager:{db_secret.region}:")
