"""What the pytest layer keeps in ``config.stash`` and ``item.stash``, in one place."""

from __future__ import annotations

import pytest

from pytest_pgsandbox._engine.handle import PgDatabase
from pytest_pgsandbox._engine.sandbox import Sandbox
from pytest_pgsandbox.settings import Settings

SETTINGS_KEY = pytest.StashKey[Settings]()  # the session's resolved settings
SANDBOX_KEY = pytest.StashKey[Sandbox]()  # the session's server, template and databases
XDIST_RUN_KEY = pytest.StashKey[str]()  # on the xdist controller: the run its workers share
HANDLE_KEY = pytest.StashKey[PgDatabase]()  # the running test's database
KEPT_KEY = pytest.StashKey[str]()  # the name its database is kept under, once it failed
FIRST_KEY = pytest.StashKey[str]()  # the database fixture that made the test's database
EARLY_RUN_KEY = pytest.StashKey[str]()  # the xdist run id a controller chose early (env)
ENV_SAVED_KEY = pytest.StashKey[dict[str, "str | None"]]()  # what the env setting replaced
