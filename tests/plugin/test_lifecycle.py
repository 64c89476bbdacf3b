"""What a session leaves behind: nothing, even when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgsb_helpers import leftovers
from pgsb_helpers import pgsandbox
from pgsb_helpers import postgres_processes
from pytest_pgsandbox._engine.servers import janitor
from pytest_pgsandbox._engine.servers import places

WAITS = """
import os
import time
from pathlib import Path

def test_waits_to_be_killed(pg):
    pg.execute("CREATE TABLE t (id int)")
    Path(os.environ["READY_FILE"]).write_text(str(os.getpid()))
    time.sleep(120)
"""


def test_a_finished_session_leaves_no_process_and_no_folder(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.copy_example("commit_is_rolled_back.py")
    pytester.runpytest_subprocess("commit_is_rolled_back.py").assert_outcomes(passed=4)
    assert leftovers(runtime) == []
    assert postgres_processes(runtime) == []


def test_a_failing_session_leaves_nothing_either(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makepyfile("def test_fails(pg):\n    assert pg.fetchval('SELECT 1') == 2\n")
    pytester.runpytest_subprocess("-x").assert_outcomes(failed=1)
    assert leftovers(runtime) == []
    assert postgres_processes(runtime) == []


def _killed_session(pytester: pytest.Pytester, runtime: Path) -> None:
    """Run a session, kill -9 it mid-test, and check that it did leave a server behind."""
    pytester.makepyfile(test_waits=WAITS)
    ready = pytester.path / "ready"
    env = dict(os.environ, READY_FILE=str(ready))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, "the session ended before it was killed"
        assert time.monotonic() < deadline, "the test never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert postgres_processes(runtime), "a killed run leaves its server running"
    assert leftovers(runtime)


def test_the_next_run_reaps_what_a_killed_run_left(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    _killed_session(pytester, runtime)
    (pytester.path / "test_waits.py").unlink()
    pytester.makepyfile(test_next="def test_next(pg):\n    pg.execute('SELECT 1')\n")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    assert postgres_processes(runtime) == []
    assert leftovers(runtime) == []


def test_gc_reaps_what_a_killed_run_left(pytester: pytest.Pytester, runtime: Path) -> None:
    _killed_session(pytester, runtime)
    result = pgsandbox(pytester, "gc")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["reaped server * (its test run, pid *, has ended)"])
    assert postgres_processes(runtime) == []
    assert leftovers(runtime) == []
    again = pgsandbox(pytester, "gc")
    again.stdout.fnmatch_lines(["nothing to reap"])


def test_a_reusable_server_is_used_by_test_runs(pytester: pytest.Pytester, runtime: Path) -> None:
    started = pgsandbox(pytester, "start", "--bin-dir", "embedded")
    assert started.ret == 0, started.stderr.str()
    try:
        started.stdout.fnmatch_lines(["started * in *s", "url: postgresql://postgres:***@*"])
        pytester.copy_example("commit_is_rolled_back.py")
        result = pytester.runpytest_subprocess("commit_is_rolled_back.py", "--pg-bin-dir=embedded")
        result.assert_outcomes(passed=4)
        result.stdout.fnmatch_lines(["*(reusable server *), ready in *"])
        two = ("commit_is_rolled_back.py", "--pg-bin-dir=embedded", "-n", "2")
        pytester.runpytest_subprocess(*two).assert_outcomes(passed=4)
        status = pgsandbox(pytester, "status")
        status.stdout.fnmatch_lines(["*PostgreSQL 18.*, reusable, running*"])
        # The runs dropped their databases again: only the built-in ones are left.
        url = pgsandbox(pytester, "url", "--reveal-password")
        import psycopg

        with psycopg.connect(url.outlines[0]) as conn:
            names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        assert names == {"postgres", "template0", "template1", "pgsandbox"}
    finally:
        stopped = pgsandbox(pytester, "stop")
    stopped.stdout.fnmatch_lines(["stopped *"])
    assert postgres_processes(runtime) == []
    assert leftovers(runtime) == []


def test_a_dead_reusable_server_is_replaced(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makepyfile("def test_x(pg):\n    assert pg.fetchval('SELECT 1') == 1\n")
    try:
        pytester.runpytest_subprocess("--pg-reuse").assert_outcomes(passed=1)
        (rec,) = janitor.records(runtime)
        assert rec.reusable
        os.kill(rec.pid, signal.SIGKILL)
        again = pytester.runpytest_subprocess("--pg-reuse")
        again.assert_outcomes(passed=1)
        again.stdout.fnmatch_lines(["*local server (socket *), ready in *"])
        (new,) = janitor.records(runtime)
        assert new.name != rec.name
    finally:
        pgsandbox(pytester, "stop")
    assert leftovers(runtime) == []


COPIES = """
import pytest

@pytest.mark.pg(isolation="clone")
@pytest.mark.parametrize("n", range(3))
def test_writes(pg, n):
    pg.execute("CREATE TABLE t (id int)")
"""


@pytest.mark.skipif(places.ram_dir() is None, reason="no RAM file system here")
def test_copies_are_made_the_same_way_on_a_server_started_or_attached_to(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reusable server (and the one xdist workers share) is attached to, not started, by
    # most sessions; its copies must still be file copies when its data is in RAM.
    monkeypatch.setenv("PGSANDBOX_CONF", "log_statement=ddl")
    pytester.makepyfile(test_copies=COPIES)
    try:
        for args in ((), (), ("-n", "2")):  # starts it, attaches, attaches from two workers
            pytester.runpytest_subprocess("--pg-reuse", *args).assert_outcomes(passed=3)
        (rec,) = janitor.records(runtime)
        log = (runtime / f"{rec.name}.log").read_text()
    finally:
        pgsandbox(pytester, "stop")
    copies = [ln for ln in log.splitlines() if "CREATE DATABASE" in ln and " TEMPLATE " in ln]
    assert len(copies) >= 9
    assert [ln for ln in copies if "STRATEGY FILE_COPY" not in ln] == []
