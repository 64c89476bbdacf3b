"""The ``pgsandbox`` command: one module per verb group."""

from __future__ import annotations

from pytest_pgsandbox.cli.main import main

__all__ = ["main"]
