"""Test-data factories bound to the test's SQLAlchemy session, with no global session.

``pg_factories`` binds every factory_boy ``SQLAlchemyModelFactory`` and every polyfactory
``SQLAlchemyFactory`` defined so far to ``pg_session`` while the test runs, and puts their
own session settings back afterwards::

    class UserFactory(factory.alchemy.SQLAlchemyModelFactory):
        class Meta:
            model = User
            sqlalchemy_session_persistence = "flush"

        name = factory.Faker("name")

    def test_orders(pg_factories):
        user = UserFactory()            # in this test's session, rolled back afterwards

``bind(session)`` does the same for any session, as a context manager.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import pytest

from pytest_pgsandbox.errors import PgSandboxError

_UNSET = object()
_MISSING = (
    "pg_factories needs factory_boy or polyfactory, and neither is installed: "
    "pip install 'pytest-pgsandbox[factories]' (or either library)."
)


@dataclass
class BoundFactories:
    """What ``pg_factories`` bound: the session, and the factory classes of each library."""

    session: Any
    factory_boy: list[type] = field(default_factory=list)
    polyfactory: list[type] = field(default_factory=list)


def _subclasses(base: type) -> list[type]:
    found: list[type] = []
    pending: list[type] = list(base.__subclasses__())
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return found


def _factory_boy_base() -> type | None:
    try:
        from factory.alchemy import SQLAlchemyModelFactory
    except ImportError:
        return None
    return SQLAlchemyModelFactory


def _polyfactory_base() -> type | None:
    try:
        from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory
    except ImportError:
        return None
    return SQLAlchemyFactory


@contextlib.contextmanager
def bind(session: Any) -> Iterator[BoundFactories]:
    """Bind every SQLAlchemy factory of factory_boy and polyfactory to ``session`` inside
    the ``with`` block; each factory's own session setting is put back at its end."""
    boy, poly = _factory_boy_base(), _polyfactory_base()
    if boy is None and poly is None:
        raise PgSandboxError(_MISSING)
    bound = BoundFactories(session)
    saved_meta: list[tuple[Any, Any, Any]] = []
    saved_poly: list[tuple[type, Any]] = []
    try:
        for cls in _subclasses(boy) if boy else []:
            meta = cls._meta  # type: ignore[attr-defined]
            saved_meta.append((meta, meta.sqlalchemy_session, meta.sqlalchemy_session_factory))
            meta.sqlalchemy_session = session
            meta.sqlalchemy_session_factory = None
            bound.factory_boy.append(cls)
        for cls in _subclasses(poly) if poly else []:
            saved_poly.append((cls, cls.__dict__.get("__session__", _UNSET)))
            cls.__session__ = session  # type: ignore[attr-defined]
            bound.polyfactory.append(cls)
        yield bound
    finally:
        for meta, own, factory in saved_meta:
            meta.sqlalchemy_session = own
            meta.sqlalchemy_session_factory = factory
        for cls, value in saved_poly:
            if value is _UNSET:
                delattr(cls, "__session__")
            else:
                cls.__session__ = value  # type: ignore[attr-defined]


@pytest.fixture
def pg_factories(pg_session: Any) -> Iterator[BoundFactories]:
    """factory_boy and polyfactory SQLAlchemy factories bound to ``pg_session`` for the test.

    Rows they create are the test's: rolled back (transaction isolation) or put back
    (clone, reset) afterwards. Define factories as usual, without a session.
    """
    if _factory_boy_base() is None and _polyfactory_base() is None:
        pytest.fail(f"pgsandbox: {_MISSING}", pytrace=False)
    with bind(pg_session) as bound:
        yield bound
