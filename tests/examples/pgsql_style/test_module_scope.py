"""A module-scoped fixture made with create_fixture: its tests share one transaction, rolled
back when the module ends (test_pgsql_style.py's tests still find two invoices)."""

import pytest
import sqlalchemy as sqla

seen = []


@pytest.mark.parametrize("n", [1, 2])
def test_rows_add_up_within_the_module(module_db, n):
    module_db.connection.execute(
        sqla.text("INSERT INTO invoices (account_id, amount) VALUES (2, :n)"), {"n": n}
    )
    count = module_db.connection.execute(sqla.text("SELECT count(*) FROM invoices")).scalar()
    seen.append(count)
    # Under xdist the two tests may run in different workers, each with its own database.
    assert count in (3, 4)
    assert len(set(seen)) == len(seen)
