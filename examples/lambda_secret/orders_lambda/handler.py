"""``handler(event, context)``: record a customer's order, return the customer's orders.

The database credentials come from the Secrets Manager secret named by ``DB_SECRET_ARN``,
in the format RDS uses (``host``, ``port``, ``username``, ``password``, ``dbname``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
import psycopg


def _credentials() -> dict[str, Any]:
    # Built per call, so it sees the environment the function runs in (and a test's).
    client = boto3.client("secretsmanager")
    value = client.get_secret_value(SecretId=os.environ["DB_SECRET_ARN"])
    return json.loads(value["SecretString"])


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    secret = _credentials()
    with psycopg.connect(
        host=secret["host"],
        port=secret["port"],
        user=secret["username"],
        password=secret["password"],
        dbname=secret["dbname"],
        connect_timeout=10,
    ) as conn:
        if "item" in event:
            conn.execute(
                "INSERT INTO orders (customer, item, quantity) VALUES (%s, %s, %s)",
                [event["customer"], event["item"], event.get("quantity", 1)],
            )
        rows = conn.execute(
            "SELECT id, item, quantity FROM orders WHERE customer = %s ORDER BY id",
            [event["customer"]],
        ).fetchall()
    orders = [{"id": id_, "item": item, "quantity": qty} for id_, item, qty in rows]
    return {"statusCode": 200, "body": json.dumps({"orders": orders})}
