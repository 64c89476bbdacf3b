"""pytest-pgsandbox: a real, clean PostgreSQL database for every test."""

from __future__ import annotations

from pytest_pgsandbox._engine.handle import PgDatabase
from pytest_pgsandbox._engine.servers.base import PgServer
from pytest_pgsandbox._engine.servers.discovery import PgBinaries
from pytest_pgsandbox._time import freeze_time
from pytest_pgsandbox._version import __version__
from pytest_pgsandbox.errors import BinariesNotFound
from pytest_pgsandbox.errors import IsolationBroken
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.errors import PgSandboxWarning
from pytest_pgsandbox.errors import ScenarioError
from pytest_pgsandbox.errors import ServerDied
from pytest_pgsandbox.errors import ServerError
from pytest_pgsandbox.errors import ServerStartError
from pytest_pgsandbox.errors import ServerUnreachable
from pytest_pgsandbox.errors import SettingError
from pytest_pgsandbox.errors import TemplateError
from pytest_pgsandbox.errors import UnsafeOperation
from pytest_pgsandbox.settings import Settings

__all__ = [
    "BinariesNotFound",
    "IsolationBroken",
    "PgBinaries",
    "PgDatabase",
    "PgSandboxError",
    "PgSandboxWarning",
    "PgServer",
    "ScenarioError",
    "ServerDied",
    "ServerError",
    "ServerStartError",
    "ServerUnreachable",
    "SettingError",
    "Settings",
    "TemplateError",
    "UnsafeOperation",
    "__version__",
    "freeze_time",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
