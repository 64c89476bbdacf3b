"""Two projects on one machine (one runtime folder): a run attaches to a reusable server only
when it was started for its own project, or when it is named (its URL), and says so."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pgsb_helpers import pgsandbox
from pytest_pgsandbox._engine.servers import janitor

TEST = """
def test_database(pg):
    assert pg.fetchval("SELECT 1") == 1
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.run(
        sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *args
    )


def test_runs_attach_only_to_their_own_projects_server(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pytester.mkdir("a"), pytester.mkdir("b")
    for folder in (a, b):
        (folder / "pytest.ini").write_text("[pytest]\n")
        (folder / "test_it.py").write_text(TEST)
    monkeypatch.chdir(a)
    started = pgsandbox(pytester, "start")
    assert started.ret == 0, started.stderr.str()
    (rec,) = janitor.records(runtime)  # the runtime fixture stops it afterwards
    assert rec.project == str(a.resolve())
    password = rec.admin().password or ""
    # Project a's own run attaches to it, and says so (even with -q).
    own = _run(pytester, "-q")
    own.assert_outcomes(passed=1)
    own.stdout.fnmatch_lines(
        [
            f"postgresql: attached to the reusable server {rec.name} (started by "
            f"pgsandbox start for {a.resolve()})"
        ]
    )
    # Reuse turned off: a private server, even in the server's own project.
    private = _run(pytester, "--pg-no-reuse")
    private.assert_outcomes(passed=1)
    assert "attached to" not in private.stdout.str()
    assert "local server (socket" in private.stdout.str()

    # Project b does not use a's server (with reuse on, it starts one of its own)...
    monkeypatch.chdir(b)
    reused = _run(pytester, "--pg-reuse")
    reused.assert_outcomes(passed=1)
    assert "attached to" not in reused.stdout.str()
    projects = sorted(r.project or "" for r in janitor.records(runtime) if r.reusable)
    assert projects == sorted([str(a.resolve()), str(b.resolve())])
    # ... but does when it is named (attach), and says so.
    named = _run(pytester, "--pg-attach", rec.name)
    named.assert_outcomes(passed=1)
    named.stdout.fnmatch_lines(
        [
            f"postgresql: attached to the reusable server {rec.name} (started by pgsandbox "
            f"start for {a.resolve()}), named by attach"
        ]
    )
    assert password
    assert password not in named.stdout.str() + named.stderr.str()
