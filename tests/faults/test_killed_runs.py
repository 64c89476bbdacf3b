"""kill -9 of an xdist controller: ``pgsandbox gc`` (or the next run) leaves no server, folder,
socket, record or lock file of the run behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgsb_helpers import clean_env
from pgsb_helpers import leftovers
from pgsb_helpers import pgsandbox
from pgsb_helpers import postgres_processes
from pytest_pgsandbox._engine.servers import janitor

WAITS = """
import os
import time
from pathlib import Path

import pytest


@pytest.mark.parametrize("n", range(2))
def test_waits_to_be_killed(pg, n):
    pg.execute("CREATE TABLE t (id int)")
    Path(os.environ["READY_DIR"], str(n)).write_text(str(os.getpid()))
    time.sleep(30)
"""


@pytest.mark.slow
@pytest.mark.parametrize("then", ["gc", "next run"])
def test_a_killed_xdist_controller_leaves_nothing_once_reaped(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, runtime: Path, then: str
) -> None:
    clean_env(monkeypatch)
    pytester.makepyfile(test_waits=WAITS)
    ready = pytester.path / "ready"
    ready.mkdir()
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2"],
        cwd=pytester.path,
        env=dict(os.environ, READY_DIR=str(ready)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its workers too, so that this test can end them
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(ready.iterdir())) < 2:
            assert proc.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "the tests never started"
            time.sleep(0.05)
        (rec,) = janitor.records(runtime)
        assert rec.run is not None  # the server the workers share
        # A run's start-up lock is only reaped once it is a few seconds old.
        time.sleep(max(0.0, began + janitor.RUN_LOCK_GRACE_SECONDS + 1 - time.monotonic()))
        proc.send_signal(signal.SIGKILL)  # the controller alone
        proc.wait(10)
        assert postgres_processes(runtime), "a killed run leaves its server running"
        if then == "gc":
            result = pgsandbox(pytester, "gc")
            assert result.ret == 0
            result.stdout.fnmatch_lines(["reaped server * (its test run, pid *, has ended)"])
        else:
            (pytester.path / "test_waits.py").unlink()
            pytester.makepyfile(test_next="def test_next(pg):\n    pg.execute('SELECT 1')\n")
            pytester.runpytest_subprocess().assert_outcomes(passed=1)
        assert postgres_processes(runtime) == []
        assert leftovers(runtime) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the orphaned workers
