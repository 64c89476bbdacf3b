"""factory_boy and polyfactory factories bound to the test's session (examples/shop_app)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import factory
import pytest
from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from pgsb_helpers import leftovers
from pytest_pgsandbox.factories import bind

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop_app"


@pytest.mark.parametrize(
    "args",
    [
        ["--pg-isolation=transaction"],
        ["--pg-isolation=clone"],
        ["--pg-isolation=reset", "-n", "2"],
    ],
    ids=["transaction", "clone", "reset-xdist"],
)
def test_the_shop_example(pytester: pytest.Pytester, runtime: Path, args: list[str]) -> None:
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest_subprocess(*args, "--pg-verify-isolation", "-W", "error")
    result.assert_outcomes(passed=7)
    assert leftovers(runtime) == []


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "things"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class ThingFactory(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        model = Thing


class ThingPoly(SQLAlchemyFactory[Thing]):
    __check_model__ = False


def test_binding_ends_with_the_block(pg_session: Any) -> None:
    own = object()
    ThingPoly.__session__ = own  # type: ignore[assignment]
    try:
        with bind(pg_session) as bound:
            assert ThingFactory in bound.factory_boy
            assert ThingPoly in bound.polyfactory
            assert ThingFactory._meta.sqlalchemy_session is pg_session
            assert ThingPoly.__session__ is pg_session
        assert ThingFactory._meta.sqlalchemy_session is None
        assert ThingPoly.__session__ is own
    finally:
        del ThingPoly.__session__
    assert SQLAlchemyFactory.__session__ is None
