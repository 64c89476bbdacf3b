"""Django aliases pointed at one server: which of them must keep apart test databases,
decided from the settings alone (before any of them is pointed at our server)."""

from __future__ import annotations

from typing import Any

from pytest_pgsandbox._engine.templates import django_source
from pytest_pgsandbox._engine.templates.django_source import separate

PG = "django.db.backends.postgresql"


def _db(name: str, host: str, port: str = "", **test: Any) -> dict[str, Any]:
    return {"ENGINE": PG, "NAME": name, "HOST": host, "PORT": port, "TEST": dict(test)}


def test_the_same_name_on_another_server_or_port_is_another_database() -> None:
    dbs = {
        "default": _db("app", "one"),
        "other": _db("app", "two"),
        "port": _db("app", "one", "5433"),
        "same": _db("app", "one"),  # Django's own signature: the same database
        "own": _db("x", "one", NAME="test_app_other"),  # taken already by its TEST NAME
    }
    renamed = separate(dbs, list(dbs))
    assert renamed == {"other": "test_app_other_" + renamed["other"][-8:], "port": "test_app_port"}
    names = [django_source.test_name(dbs[a]) for a in ("default", "other", "port", "same", "own")]
    assert names[0] == names[3] == "test_app"
    assert len(set(names)) == 4  # default and same one database, every other its own


def test_names_stay_identifiers_and_worker_suffixes_are_kept() -> None:
    long = "n" * 60
    dbs = {
        "default": _db(long, "one", NAME=f"test_{long}_gw0"[:63]),
        "a_second_alias": _db(long, "two", NAME=f"test_{long}_gw0"[:63]),
        "third": _db("shop", "one", NAME="test_shop_gw1"),
        "fourth": _db("shop", "two", NAME="test_shop_gw1"),
    }
    renamed = separate(dbs, list(dbs))
    assert renamed["fourth"] == "test_shop_gw1_fourth"
    assert len(renamed["a_second_alias"].encode()) <= 63
    assert renamed["a_second_alias"] != dbs["default"]["TEST"]["NAME"]
    assert dbs["default"]["TEST"]["NAME"] == f"test_{long}_gw0"[:63]


def test_nothing_changes_when_no_two_aliases_meet() -> None:
    dbs = {"default": _db("app", "one"), "other": _db("app_other", "two")}
    assert separate(dbs, list(dbs)) == {}
    assert dbs["other"]["TEST"] == {}
