"""SQLModel projects: their metadata builds the template, their sessions are SQLModel's."""

from __future__ import annotations

from pathlib import Path

import pytest

MODELS = """
from sqlmodel import Field, SQLModel


class Hero(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str
    power: int = 0
"""

TESTS = """
import pytest
from sqlmodel import Session, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import Hero


def test_pg_session_is_sqlmodels(pg_session):
    assert isinstance(pg_session, Session)
    pg_session.add(Hero(name="Deadpond", power=3))
    pg_session.commit()
    heroes = pg_session.exec(select(Hero)).all()
    assert [h.name for h in heroes] == ["Deadpond"]
    # SQLAlchemy-style code on the same session raises no deprecation warning.
    assert pg_session.execute(select(Hero.name)).scalar_one() == "Deadpond"


def test_each_test_starts_clean(pg_session):
    assert pg_session.exec(select(Hero)).all() == []


@pytest.mark.asyncio
async def test_pg_async_session_is_sqlmodels(pg_async_session):
    assert isinstance(pg_async_session, AsyncSession)
    pg_async_session.add(Hero(name="Rusty-Man", power=9))
    await pg_async_session.commit()
    result = await pg_async_session.exec(select(Hero.name))
    assert result.all() == ["Rusty-Man"]
    rows = await pg_async_session.execute(select(Hero.power))
    assert rows.scalar_one() == 9
"""


@pytest.mark.parametrize("isolation", ["transaction", "reset"])
def test_a_sqlmodel_project(pytester: pytest.Pytester, runtime: Path, isolation: str) -> None:
    pytest.importorskip("sqlmodel")
    pytester.makepyfile(models=MODELS, test_heroes=TESTS)
    pytester.makeini(
        "[pytest]\n"
        "pythonpath = .\n"
        "pg_schema = metadata:models:SQLModel\n"
        f"pg_isolation = {isolation}\n"
        "asyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
