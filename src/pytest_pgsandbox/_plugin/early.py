"""The env setting's early start: the server, before any ``conftest.py`` is imported.

Applications read their settings from the environment when they are imported, and a
``conftest.py`` imports them: the variables must be set by then. ``pytest_configure`` takes
the session's ``Sandbox`` from here when this started one.
"""

from __future__ import annotations

import atexit
import os
import uuid

import pytest

from pytest_pgsandbox._engine.naming import new_run_id
from pytest_pgsandbox._engine.sandbox import Sandbox
from pytest_pgsandbox._engine.sandbox import XdistRun
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox._plugin.hooks import settings_from_config
from pytest_pgsandbox._plugin.keys import EARLY_RUN_KEY
from pytest_pgsandbox._plugin.keys import ENV_SAVED_KEY
from pytest_pgsandbox._plugin.keys import SANDBOX_KEY
from pytest_pgsandbox.errors import PgSandboxError

EARLY_RUN = "_PGSANDBOX_EARLY_RUN"  # from an xdist controller to its workers: "uid:pid"


def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """With the env setting, start the server and set its variables before any
    ``conftest.py`` is imported: modules they import read their settings at import time.

    Under xdist the controller starts the run's shared server (the workers attach to it) and
    every process, the controller too, sets the variables (each worker for its own database).
    """
    config = early_config
    known = config.known_args_namespace
    if any(getattr(known, name, False) for name in ("pg_info", "help", "version")):
        return
    settings = settings_from_config(config, early=True)
    if not settings.env:
        return
    inherited = os.environ.get(EARLY_RUN, "")
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")
    run = ""
    try:
        if inherited and uid and inherited.startswith(uid + ":"):  # a worker of that controller
            worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
            xdist = XdistRun(uid, int(inherited.rpartition(":")[2]))
            sandbox = Sandbox(settings, uid[:8], worker, base=config.rootpath, xdist=xdist)
            found = sandbox.open_early()
        else:
            numprocesses = getattr(config.known_args_namespace, "numprocesses", None)
            if numprocesses and config.pluginmanager.has_plugin("xdist"):  # the controller
                run = getattr(config.known_args_namespace, "testrunuid", None) or uuid.uuid4().hex
            sandbox = Sandbox(settings, run[:8] or new_run_id(), base=config.rootpath)
            found = sandbox.open_early(run or None, os.getpid() if run else None)
    except PgSandboxError as exc:
        raise pytest.UsageError(
            "pgsandbox: the env setting needs the server before conftest.py files are "
            f"imported, and it could not be had.\n{mask(str(exc))}"
        ) from None
    atexit.register(sandbox.close)
    if run:
        found = {**found, EARLY_RUN: f"{run}:{os.getpid()}"}
        config.stash[EARLY_RUN_KEY] = run
    config.stash[ENV_SAVED_KEY] = {name: os.environ.get(name) for name in found}
    os.environ.update(found)
    config.stash[SANDBOX_KEY] = sandbox
