"""Runs started together with ``--pg-reuse`` share one reusable server: none fails, and
exactly one server is left running (under a lock, published once it is ready)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgsb_helpers import clean_env
from pytest_pgsandbox._engine.servers import janitor

TESTS = """
import pytest


@pytest.mark.parametrize("n", range(6))
def test_writes(pg, n):
    pg.execute("INSERT INTO notes (body) VALUES (%s)", [f"note {n}"])
    assert pg.fetchval("SELECT count(*) FROM notes") == 2
"""
SCHEMA = """
CREATE TABLE notes (id serial PRIMARY KEY, body text);
INSERT INTO notes (body) VALUES ('first');
"""
# Every pair starts with no reusable server, so both runs race to start one.
PAIRS = int(os.environ.get("PGSANDBOX_TEST_REUSE_PAIRS", "3"))


def _reusable(runtime: Path) -> list[janitor.ServerRecord]:
    return [r for r in janitor.records(runtime) if r.reusable and janitor.is_alive(r)]


@pytest.mark.slow
def test_pairs_of_runs_started_together_share_one_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, runtime: Path
) -> None:
    clean_env(monkeypatch)
    (pytester.path / "schema.sql").write_text(SCHEMA)
    pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
    pytester.makepyfile(test_notes=TESTS)
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "--pg-reuse"]
    failures = []
    for pair in range(PAIRS):
        for rec in _reusable(runtime):
            janitor.reap_one(runtime, rec)
        # Pair 0: both serial; pair 1: both under -n 2; then one of each, in turn.
        xdist = [pair % 3 == 1 or (pair % 3 == 2 and i == 0) for i in range(2)]
        runs = [
            subprocess.Popen(
                [*base, *(["-n", "2"] if x else [])],
                cwd=pytester.path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for x in xdist
        ]
        for run in runs:
            out, _ = run.communicate(timeout=240)
            if run.returncode != 0:
                failures.append(f"pair {pair}:\n{out}")
        servers = _reusable(runtime)
        assert len(servers) == 1, f"pair {pair}: {len(servers)} reusable servers"
    assert not failures, "\n".join(failures)
