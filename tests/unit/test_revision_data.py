"""The data spec of data through migrations: its shape, its errors, what its hash covers."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_pgsandbox._engine.templates.revision_data import parse
from pytest_pgsandbox.errors import TemplateError
from pytest_pgsandbox.settings import resolve

ROW = {"__tablename__": "users", "name": "Alice"}


def check_one(conn: Any) -> None:
    assert conn is not None


def check_two(conn: Any) -> None:
    assert conn is None


def test_rows_lists_and_callables_in_pytest_alembics_shape() -> None:
    data = parse(
        {"before_revision_data": {"0002": ROW}, "at_revision_data": {"0002": [ROW, check_one]}}
    )
    assert data.before == {"0002": (ROW,)}
    assert data.at == {"0002": (ROW, check_one)}
    assert data.revisions() == {"0002"}
    assert not parse(None)
    assert not parse({})


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ([ROW], "returned a list"),
        ({"before_revision": {}}, "unknown keys before_revision"),
        ({"at_revision_data": [ROW]}, "at_revision_data is a list"),
        ({"at_revision_data": {"0002": 3}}, "at_revision_data['0002']: 3 is neither"),
        ({"before_revision_data": {"1": {"name": "x"}}}, "has no __tablename__"),
        ({"before_revision_data": {"1": {"__tablename__": "t"}}}, "has no columns"),
    ],
)
def test_a_spec_of_the_wrong_shape_says_what_is_wrong(raw: object, said: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse(raw)
    assert said in str(info.value)
    assert "before_revision_data and/or at_revision_data" in str(info.value)


def test_the_hash_changes_with_a_row_or_a_callables_source() -> None:
    one = parse({"at_revision_data": {"0002": [ROW, check_one]}}).digest()
    assert one == parse({"at_revision_data": {"0002": [dict(ROW), check_one]}}).digest()
    assert one != parse({"at_revision_data": {"0002": [ROW, check_two]}}).digest()
    assert one != parse({"at_revision_data": {"0002": [{**ROW, "name": "Bo"}, check_one]}}).digest()
    assert one != parse({"before_revision_data": {"0002": [ROW, check_one]}}).digest()


def test_migrations_models_takes_module_and_attribute_path() -> None:
    settings = resolve({}, {"PGSANDBOX_MIGRATIONS_MODELS": "metadata:app.models:Base.metadata"}, {})
    assert settings.migrations_models == "app.models:Base.metadata"
