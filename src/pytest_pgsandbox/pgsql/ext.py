"""pytest-pgsql's extras (``pytest_pgsql.ext``): ``create_engine_fixture``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["create_engine_fixture"]


def create_engine_fixture(name: str, scope: str = "session", **engine_params: Any) -> Any:
    """A fixture named ``name`` giving a SQLAlchemy engine on ``database_uri`` made with
    ``engine_params`` (``json_serializer``, ``echo``...). Use it with ``create_fixture``:
    the database behind it is put back after every test that uses such a fixture.
    """
    if "url" in engine_params:
        raise TypeError("create_engine_fixture: the URL is database_uri's; it cannot be changed")

    @pytest.fixture(name=name, scope=scope)  # type: ignore[call-overload, untyped-decorator]
    def _engine_fixture(database_uri: str) -> Iterator[Any]:
        from pytest_pgsandbox._engine.drivers.sqla import require_sqlalchemy

        sa = require_sqlalchemy()
        # After DDL, reset isolation swaps the database for a fresh copy, which ends the
        # pool's connections: check each one before use.
        engine = sa.create_engine(database_uri, **{"pool_pre_ping": True, **engine_params})
        yield engine
        engine.dispose()

    return _engine_fixture
