"""Transactional tests: what they commit is seen by other connections (the live server's
thread). Django flushes every table after each of them, so the first one asks for
``serialized_rollback`` to have the data migration's rows put back; the ones marked
``@pytest.mark.pg(isolation="reset")`` are put back by pytest-pgsandbox instead: only the
tables they wrote, data migration rows and sequences included, on every alias."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

import pytest
from audit.models import Entry
from catalog.models import Category
from django.core.cache import cache
from django.db import connections

MIGRATED = ["books", "games", "music"]  # catalog/migrations/0002_categories.py


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_live_server_reads_the_test_database(live_server: Any) -> None:
    Category.objects.create(name="tools")
    with urllib.request.urlopen(f"{live_server.url}/categories/", timeout=30) as response:  # noqa: S310
        body = json.load(response)
    assert body == {"categories": [*MIGRATED, "tools"]}


@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_sees_committed_rows() -> None:
    Category.objects.create(name="garden")
    assert Category.objects.filter(name="garden").exists()


def _post(url: str, name: str) -> int:
    data = urllib.parse.urlencode({"name": name}).encode()
    with urllib.request.urlopen(url, data=data, timeout=30) as response:  # noqa: S310
        made: int = json.load(response)["id"]
    return made


@pytest.mark.pg(isolation="reset")
@pytest.mark.django_db(transaction=True, databases=["default", "audit"])
@pytest.mark.parametrize("n", range(3))
def test_reset_puts_back_what_any_connection_committed(live_server: Any, n: int) -> None:
    # Whatever ran before on this worker (a flushed test, another of these): the start is
    # the template's, data migration rows included, sequences where the migrations left them.
    assert sorted(Category.objects.values_list("name", flat=True)) == MIGRATED
    assert Entry.objects.count() == 0
    assert cache.get("last") is None
    next_id = max(Category.objects.values_list("id", flat=True)) + 1
    assert _post(f"{live_server.url}/categories/", f"made by the server {n}") == next_id
    assert Category.objects.create(name=f"made here {n}").id == next_id + 1
    Category.objects.filter(name="books").update(name=f"renamed {n}")
    Category.objects.filter(name="music").delete()
    Entry.objects.create(action=f"reset {n}")  # the audit alias
    cache.set("last", n)
    with connections["default"].cursor() as cur:
        cur.execute("SELECT count(*) FROM catalog_category")
        assert cur.fetchone()[0] == len(MIGRATED) + 1
