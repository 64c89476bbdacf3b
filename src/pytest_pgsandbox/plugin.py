"""The pytest entry point (``pytest11``: ``pgsandbox``); the hooks live in ``_plugin.hooks``
(and ``_plugin.early``)."""

from __future__ import annotations

from pytest_pgsandbox._plugin.early import pytest_load_initial_conftests
from pytest_pgsandbox._plugin.hooks import pytest_addhooks
from pytest_pgsandbox._plugin.hooks import pytest_addoption
from pytest_pgsandbox._plugin.hooks import pytest_cmdline_main
from pytest_pgsandbox._plugin.hooks import pytest_collection_finish
from pytest_pgsandbox._plugin.hooks import pytest_configure
from pytest_pgsandbox._plugin.hooks import pytest_configure_node
from pytest_pgsandbox._plugin.hooks import pytest_make_collect_report
from pytest_pgsandbox._plugin.hooks import pytest_plugins
from pytest_pgsandbox._plugin.hooks import pytest_report_header
from pytest_pgsandbox._plugin.hooks import pytest_report_teststatus
from pytest_pgsandbox._plugin.hooks import pytest_runtest_makereport
from pytest_pgsandbox._plugin.hooks import pytest_runtest_protocol
from pytest_pgsandbox._plugin.hooks import pytest_testnodedown
from pytest_pgsandbox._plugin.hooks import pytest_unconfigure

__all__ = [
    "pytest_addhooks",
    "pytest_addoption",
    "pytest_cmdline_main",
    "pytest_collection_finish",
    "pytest_configure",
    "pytest_configure_node",
    "pytest_load_initial_conftests",
    "pytest_make_collect_report",
    "pytest_plugins",
    "pytest_report_header",
    "pytest_report_teststatus",
    "pytest_runtest_makereport",
    "pytest_runtest_protocol",
    "pytest_testnodedown",
    "pytest_unconfigure",
]
