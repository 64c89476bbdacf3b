"""Frozen time under every isolation: defaults, keywords, triggers, other connections."""

import datetime as dt

import psycopg
import pytest

import pytest_pgsandbox

Y2K_EVE = dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
SECOND = dt.timedelta(seconds=1)


@pytest.fixture(params=["transaction", "clone", "reset"])
def db(request):
    request.applymarker(pytest.mark.pg(isolation=request.param))
    return request.getfixturevalue("pg")


def test_default_now_stores_the_frozen_instant(db):
    with db.freeze_time("1999-12-31 23:59:59"):
        db.execute("INSERT INTO events (kind) VALUES ('party')")
        assert db.fetchval("SELECT created_at FROM events WHERE kind = 'party'") == Y2K_EVE
        assert db.fetchval("SELECT stamped_at FROM events WHERE kind = 'party'") == Y2K_EVE


def test_keywords_in_the_tests_queries(db):
    with db.freeze_time(Y2K_EVE):
        row = db.fetchone(
            "SELECT now(), CURRENT_TIMESTAMP, current_date, LOCALTIMESTAMP(0), "
            "statement_timestamp(), clock_timestamp(), 'CURRENT_DATE', \"current_date\" "
            "FROM (SELECT 1 AS current_date) t"
        )
    assert row[:3] == (Y2K_EVE, Y2K_EVE, Y2K_EVE.date())
    assert row[3] == Y2K_EVE.replace(tzinfo=None)  # the session's time zone is UTC
    assert row[4:6] == (Y2K_EVE, Y2K_EVE)
    assert row[6:] == ("CURRENT_DATE", 1)


def test_tick_moves_both_clocks(db):
    clock = db.freeze_time("1999-12-31 23:59:59")
    clock.tick(dt.timedelta(seconds=1))
    assert dt.datetime.now(dt.timezone.utc) == Y2K_EVE + SECOND
    db.conn.commit()  # now() is when the transaction began
    assert db.fetchval("SELECT now()") == Y2K_EVE + SECOND
    clock.move_to("2001-01-01T00:00:00Z")
    db.conn.commit()
    assert db.fetchval("SELECT now()::date") == dt.date(2001, 1, 1)
    clock.unfreeze()
    db.conn.commit()
    assert db.fetchval("SELECT now()") > Y2K_EVE + dt.timedelta(days=9000)


def test_a_rollback_does_not_unfreeze(db):
    with db.freeze_time(Y2K_EVE):
        db.conn.rollback()
        assert db.fetchval("SELECT now()") == Y2K_EVE


def test_other_connections_see_it(db):
    if db.isolation == "transaction":
        pytest.skip("other connections cannot see a transaction-isolated test's database")
    with db.freeze_time(Y2K_EVE), psycopg.connect(db.url) as other:
        assert other.execute("SELECT now()").fetchone()[0] == Y2K_EVE
        other.execute("INSERT INTO events (kind) VALUES ('app')")
        stored = other.execute("SELECT created_at FROM events WHERE kind = 'app'")
        assert stored.fetchone()[0] == Y2K_EVE


@pytest_pgsandbox.freeze_time("2030-06-01")
def test_decorator(db):
    assert dt.date.today() == dt.date(2030, 6, 1)
    assert db.fetchval("SELECT CURRENT_DATE") == dt.date(2030, 6, 1)


def test_the_next_test_runs_on_real_time(db):
    assert db.fetchval("SELECT count(*) FROM pgsandbox_clock.frozen") == 0
    assert db.fetchval("SELECT now() > '2020-01-01'::timestamptz")
    assert dt.date.today().year > 2020
