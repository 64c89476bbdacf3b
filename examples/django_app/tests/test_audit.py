"""A second alias: the audit log's database, with a template of its own."""

from __future__ import annotations

import pytest
from audit.models import Entry
from django.db import connections


@pytest.mark.django_db(databases=["default", "audit"])
def test_entries_go_to_the_audit_database(worker_id: str) -> None:
    Entry.objects.create(action="login")
    assert Entry.objects.using("audit").count() == 1
    audit = connections["audit"]
    expected = "test_shop_audit" if worker_id == "master" else f"test_shop_audit_{worker_id}"
    assert audit.settings_dict["NAME"] == expected
    with audit.cursor() as cur:
        cur.execute("SELECT to_regclass('catalog_category') IS NULL")
        assert cur.fetchone()[0]  # the router keeps the catalogue out of it
    with connections["default"].cursor() as cur:
        cur.execute("SELECT to_regclass('audit_entry') IS NULL")
        assert cur.fetchone()[0]
