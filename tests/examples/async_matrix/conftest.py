"""Runs the async matrix under the runner the outer test picks (PGSB_RUNNER)."""

import os

import psycopg
import pytest

RUNNER = os.environ.get("PGSB_RUNNER", "asyncio")


def pytest_collection_modifyitems(items):
    if os.environ.get("PGSB_ORDER") == "reversed":
        items.reverse()
    elif os.environ.get("PGSB_ORDER") == "shuffled":
        import random

        random.Random(20261123).shuffle(items)


@pytest.fixture(scope="session", params=["asyncio", "trio"] if RUNNER == "anyio" else ["asyncio"])
def anyio_backend(request):
    return request.param


@pytest.fixture(autouse=True)
def starts_from_the_template(pg):
    # From a connection of its own, committed at once: what earlier tests left would show,
    # and no lock of this check's outlives it (the test's DDL would wait for it).
    with psycopg.connect(pg.info.url(), autocommit=True) as conn:

        def value(query):
            return conn.execute(query).fetchone()[0]

        assert value("SELECT count(*) FROM users") == 3
        assert value("SELECT count(*) FROM orders") == 2
        assert value("SELECT pg_sequence_last_value('users_id_seq')") == 3
        assert value("SELECT pg_sequence_last_value('orders_id_seq')") == 2
        assert value("SELECT to_regclass('extra')") is None
        # A connection kept for the next test must not carry a session lock over.
        # (This database's locks only: under xdist the other worker shares the server.)
        held = value(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        )
        assert held == 0
