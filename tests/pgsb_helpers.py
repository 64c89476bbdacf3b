"""Helpers for the plugin's own tests (imported by test modules; not a plugin)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pytest_pgsandbox._engine.servers import janitor


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


# The schema examples/isolation_matrix.py expects, and what it reports under each isolation.
MATRIX_SCHEMA = """
CREATE TABLE users (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz DEFAULT now()
);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    user_id int NOT NULL REFERENCES users ON DELETE CASCADE,
    total numeric(10, 2) NOT NULL
);
INSERT INTO users (name)
VALUES ('Alice Chen'), ('Bob Okafor'), ('Carmen Ruiz'), ('Dmitri Ivanov'), ('Emeka Eze');
INSERT INTO orders (user_id, total) VALUES (1, 10), (1, 20.5), (2, 7.25);
"""
MATRIX_TESTS = 13
MATRIX_NEED_OTHER_CONNECTIONS = 3  # skipped under transaction isolation


def matrix_outcomes(isolation: str) -> dict[str, int]:
    if isolation == "transaction":
        skipped = MATRIX_NEED_OTHER_CONNECTIONS
        return {"passed": MATRIX_TESTS - skipped, "skipped": skipped}
    return {"passed": MATRIX_TESTS}


def matrix_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with examples/isolation_matrix.py and the schema it expects."""
    (pytester.path / "schema.sql").write_text(MATRIX_SCHEMA)
    pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
    pytester.copy_example("isolation_matrix.py")
    return pytester
