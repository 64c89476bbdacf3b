"""A live server test: the transactional kind, with ``serialized_rollback`` so that the data
migration's rows are put back for the tests after it."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from catalog.models import Category


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_live_server_reads_the_test_database(live_server: Any) -> None:
    Category.objects.create(name="tools")
    with urllib.request.urlopen(f"{live_server.url}/categories/", timeout=30) as response:  # noqa: S310
        body = json.load(response)
    assert body == {"categories": ["books", "games", "music", "tools"]}


@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_sees_committed_rows() -> None:
    Category.objects.create(name="garden")
    assert Category.objects.filter(name="garden").exists()
