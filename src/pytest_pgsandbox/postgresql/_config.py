"""pytest-postgresql's ``--postgresql-*`` options and ``postgresql_*`` ini keys.

They are registered once: by pytest-postgresql's own plugin when it is installed, else here
(``register``). Either way the factories read them the same way (``read``): the flag, else
the ini key; a value equal to pytest-postgresql's own default counts as not given, so that
having pytest-postgresql installed changes nothing.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

PLUGIN = "pytest_postgresql"  # pytest-postgresql's pytest11 entry point

# name: (help, ini type, pytest-postgresql's default)
OPTIONS: Mapping[str, tuple[str, str, object]] = {
    "exec": (
        "path to pg_ctl: its folder is used as bin_dir",
        "string",
        "/usr/lib/postgresql/14/bin/pg_ctl",
    ),
    "host": ("host of an existing server (noproc)", "string", "127.0.0.1"),
    "port": ("TCP port of the server", "string", None),
    "port_search_count": ("accepted and ignored: the server picks a free port", "string", 5),
    "user": (
        "the role the tests log in as (made on the server; noproc: one it has)",
        "string",
        "postgres",
    ),
    "password": ("that role's password", "string", None),
    "options": ("libpq options of the test connections", "string", ""),
    "startparams": ("accepted and ignored: pg_ctl's parameters", "string", "-w"),
    "unixsocketdir": (
        "accepted and ignored: the socket is in a private folder",
        "string",
        tempfile.gettempdir(),
    ),
    "dbname": (
        "the name of each test's database (xdist: the worker's id appended)",
        "string",
        "tests",
    ),
    "maintenance_dbname": ("database to connect to on an existing server", "string", "postgres"),
    "load": ("SQL file or import path loaded into the template", "pathlist", None),
    "postgres_options": ("postgres options, e.g. '-N 16' or '-c key=value'", "string", ""),
    "load_autocommit": ("run loaders with autocommit on", "bool", False),
}
FLAG_ONLY = {"drop_test_database": "drop a labelled database of a test's name first"}


def upstream_installed() -> bool:
    """Whether pytest-postgresql's plugin is installed (it registers the options itself)."""
    try:
        found = importlib.metadata.entry_points(group="pytest11")
    except Exception:  # pragma: no cover - broken metadata: act as if it is not there
        return False
    return any(ep.name == PLUGIN or ep.value.startswith("pytest_postgresql") for ep in found)


def register(parser: pytest.Parser) -> None:
    """Register the options and ini keys, unless pytest-postgresql does."""
    if upstream_installed():
        return
    group = parser.getgroup(
        "postgresql", "pytest-postgresql's options (read by pytest_pgsandbox.postgresql)"
    )
    for name, (text, kind, _default) in OPTIONS.items():
        flag = "--postgresql-" + name.replace("_", "-")
        dest = "postgresql_" + name
        if kind == "bool":
            group.addoption(flag, action="store_true", dest=dest, default=None, help=text)
            parser.addini(dest, text, type="bool", default=None)
        elif kind == "pathlist":
            group.addoption(flag, action="append", dest=dest, default=None, help=text)
            parser.addini(dest, text, type="pathlist", default=[])
        else:
            group.addoption(flag, action="store", dest=dest, default=None, help=text)
            parser.addini(dest, text, type="string", default=None)
    for name, text in FLAG_ONLY.items():
        flag = "--postgresql-" + name.replace("_", "-")
        group.addoption(flag, action="store_true", dest="postgresql_" + name, help=text)


@dataclass(frozen=True)
class CompatConfig:
    """The values given (``None``: not given, or pytest-postgresql's default)."""

    values: Mapping[str, Any]

    def get(self, name: str) -> Any:
        return self.values.get(name)


def read(config: pytest.Config) -> CompatConfig:
    values: dict[str, Any] = {}
    for name, (_text, kind, default) in OPTIONS.items():
        dest = "postgresql_" + name
        value = config.getoption(dest, default=None)
        if value in (None, [], "", False):  # a store_true flag not given reads False
            try:
                value = config.getini(dest)
            except ValueError:  # not registered (plugin autoloading off)
                value = None
        if kind == "pathlist" and value:
            value = [str(v) for v in value]
        if kind == "bool" and isinstance(value, str):
            value = value.strip().lower() in ("1", "true", "yes", "on")
        if value in (None, [], "") or value == default or str(value) == str(default):
            continue
        values[name] = value
    for name in FLAG_ONLY:
        if config.getoption("postgresql_" + name, default=False):
            values[name] = True
    return CompatConfig(values)
