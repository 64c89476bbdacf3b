"""A sale committed by the application's own connection, and gone in the next test.

The first test gets a database of its own (clone isolation): the "application" connects
through ``pg.url`` and commits for real. The next test starts from the template again.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from chinook.data import N_INVOICES
from chinook.data import Store

NEW_ADDRESS = "1 Sample Street"


def record_sale(url: str, customer_id: int, track_ids: list[int]) -> int:
    """What the application does: one invoice, its lines at the tracks' prices, committed."""
    with psycopg.connect(url) as conn:  # leaving the block commits
        invoice_id: int = conn.execute(
            """
            INSERT INTO invoice (customer_id, invoice_date, billing_address, billing_city,
                                 billing_state, billing_country, billing_postal_code, total)
            SELECT customer_id, now(), %s, city, state, country, postal_code, 0
            FROM customer WHERE customer_id = %s
            RETURNING invoice_id
            """,
            (NEW_ADDRESS, customer_id),
        ).fetchone()[0]
        conn.execute(
            """
            INSERT INTO invoice_line (invoice_id, track_id, unit_price, quantity)
            SELECT %s, track_id, unit_price, 1 FROM track WHERE track_id = ANY(%s)
            """,
            (invoice_id, track_ids),
        )
        conn.execute(
            """
            UPDATE invoice
            SET total = (SELECT sum(unit_price * quantity) FROM invoice_line
                         WHERE invoice_id = invoice.invoice_id)
            WHERE invoice_id = %s
            """,
            (invoice_id,),
        )
    return invoice_id


@pytest.mark.pg(isolation="clone")
def test_a_sale_committed_on_a_second_connection(pg, store: Store):
    tracks = [store.track[0], store.track[-1]]
    invoice_id = record_sale(pg.url, store.customer[0].customer_id, [t.track_id for t in tracks])

    assert invoice_id == N_INVOICES + 1  # the identity goes on after the seeded ids
    # pg.conn is another connection: it sees the sale because it was committed
    total = pg.fetchval("SELECT total FROM invoice WHERE invoice_id = %s", (invoice_id,))
    assert total == sum((t.unit_price for t in tracks), Decimal(0))
    assert pg.fetchval("SELECT count(*) FROM invoice") == N_INVOICES + 1
    assert pg.fetchval("SELECT count(*) FROM invoice_line") == len(store.invoice_line) + 2


def test_the_next_test_does_not_see_it(pg, store: Store):
    assert pg.fetchval("SELECT count(*) FROM invoice") == N_INVOICES
    assert pg.fetchval("SELECT max(invoice_id) FROM invoice") == N_INVOICES
    assert pg.fetchval("SELECT count(*) FROM invoice_line") == len(store.invoice_line)
    sold = pg.fetchall("SELECT invoice_id FROM invoice WHERE billing_address = %s", (NEW_ADDRESS,))
    assert sold == []
