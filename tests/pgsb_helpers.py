"""Helpers for the plugin's own tests (imported by test modules; not a plugin)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pytest_pgsandbox._engine import janitor


def leftovers(folder: Path) -> list[str]:
    """What a finished session left in its runtime folder (the cache does not count)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != "cache")


def postgres_processes(folder: Path) -> list[int]:
    """PIDs of running postgres processes whose command line mentions ``folder``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            line = janitor.cmdline(int(entry.name))
            if line and "postgres" in line and str(folder) in line:
                pids.append(int(entry.name))
    return pids


def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("PGSANDBOX_") and key not in (
            "PGSANDBOX_RUNTIME_DIR",
            "PGSANDBOX_CACHE_DIR",
        ):
            monkeypatch.delenv(key)


def pgsandbox(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run the ``pgsandbox`` command (as ``python -m pytest_pgsandbox``, PATH or not)."""
    return pytester.run(sys.executable, "-m", "pytest_pgsandbox", *args, timeout=120)
