"""Frozen time without a server: keyword rewriting and reading instants."""

from __future__ import annotations

import datetime as dt

import pytest

from pytest_pgsandbox._engine.clock.dbclock import rewrite
from pytest_pgsandbox._engine.clock.freezing import as_instant
from pytest_pgsandbox.errors import PgSandboxError

NOW = "pgsandbox_clock.now()"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("SELECT CURRENT_TIMESTAMP", f"SELECT {NOW}::timestamptz"),
        ("select current_date, localtime", f"select {NOW}::date, {NOW}::time"),
        ("SELECT LOCALTIMESTAMP(0)", f"SELECT {NOW}::timestamp(0)"),
        ("SELECT current_time ( 2 )", f"SELECT {NOW}::timetz(2)"),
        ("SELECT now()", "SELECT now()"),
        (
            "SELECT 'CURRENT_DATE', E'it''s current_date'",
            "SELECT 'CURRENT_DATE', E'it''s current_date'",
        ),
        ('SELECT "current_date" FROM t', 'SELECT "current_date" FROM t'),
        ("SELECT 1 AS current_date", "SELECT 1 AS current_date"),
        ("SELECT t.current_date FROM t", "SELECT t.current_date FROM t"),
        ("SELECT $f$current_date$f$ -- current_date", "SELECT $f$current_date$f$ -- current_date"),
        ("SELECT /* localtime */ 1", "SELECT /* localtime */ 1"),
        ("SELECT current_user, current_dates", "SELECT current_user, current_dates"),
    ],
)
def test_rewrite_touches_only_the_keywords(query: str, expected: str) -> None:
    assert rewrite(query) == expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("1999-12-31 23:59:59", dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)),
        (
            "1999-12-31T23:59:59+02:00",
            dt.datetime(1999, 12, 31, 21, 59, 59, tzinfo=dt.timezone.utc),
        ),
        (dt.date(2030, 6, 1), dt.datetime(2030, 6, 1, tzinfo=dt.timezone.utc)),
        (dt.datetime(2030, 6, 1, 12), dt.datetime(2030, 6, 1, 12, tzinfo=dt.timezone.utc)),
        ("June 1, 2030", dt.datetime(2030, 6, 1, tzinfo=dt.timezone.utc)),
    ],
)
def test_instants_naive_means_utc(when: object, expected: dt.datetime) -> None:
    assert as_instant(when) == expected  # type: ignore[arg-type]


def test_a_bad_instant_says_how_to_write_one() -> None:
    with pytest.raises(PgSandboxError, match="ISO 8601"):
        as_instant("the day after tomorrow")
