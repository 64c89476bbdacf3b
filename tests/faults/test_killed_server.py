"""A server killed mid-session: the session stops at the first test that meets it, whose
report explains the death once; the remaining tests are not run."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgsb_helpers import clean_env

CONFTEST = """
import time


def pytest_sessionfinish(session):
    with open({ended!r}, "w") as f:
        f.write(str(time.time()))
"""
TESTS = """
import os
import signal
import time

import pytest
from pytest_pgsandbox._engine.servers.choice import ExternalServer


def test_kills_the_server(pg, pg_server):
    me = os.environ.get("PYTEST_XDIST_WORKER")
    if me is not None:
        # Not before the other worker uses the server: one that starts after the kill finds
        # the run's server gone and starts one of its own, whose tests rightly pass.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with open({ran!r}, "a+") as f:
                f.seek(0)
                if any(line.split()[1] != me for line in f.read().splitlines()):
                    break
            time.sleep(0.01)
    pid = pg_server.process.pid if hasattr(pg_server, "process") else None
    if pid is None:  # an xdist worker attached to the run's server
        from pytest_pgsandbox._engine.servers import janitor
        pid = janitor.postmaster_pid(pg_server.folder / "data")
    with open({stamp!r}, "w") as f:
        f.write(str(time.time()))
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)


@pytest.mark.parametrize("n", range({n}))
def test_after(pg, n):
    pg.execute("SELECT 1")  # meets the server: a test that does not may pass after the kill
    with open({ran!r}, "a") as f:
        f.write(f"{{time.time()}} {{os.environ.get('PYTEST_XDIST_WORKER', 'main')}}\\n")
"""
N = 200


@pytest.mark.slow
@pytest.mark.parametrize(
    ("isolation", "xdist"), [("transaction", False), ("clone", False), ("transaction", True)]
)
def test_a_killed_server_ends_the_rest_quickly_with_one_full_message(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    runtime: Path,
    tmp_path: Path,
    isolation: str,
    xdist: bool,
) -> None:
    clean_env(monkeypatch)
    stamp = tmp_path / "killed-at"
    ended_at = tmp_path / "ended-at"
    ran = tmp_path / "ran-at"
    pytester.makeconftest(CONFTEST.format(ended=str(ended_at)))
    pytester.makepyfile(test_kill=TESTS.format(stamp=str(stamp), ran=str(ran), n=N))
    args = ["-p", "no:randomly", f"--pg-isolation={isolation}"]
    if xdist:
        args += ["-n", "2"]  # one worker started the server, the other attached to it
    result = pytester.runpytest_subprocess(*args, timeout=300)
    output = result.stdout.str()
    took = float(ended_at.read_text()) - float(stamp.read_text())  # the controller's, in xdist
    assert result.ret == 1, output
    outcomes = result.parseoutcomes()
    # Under xdist the other worker may pass many tests before the kill; after it, none that
    # reached the server (but the one in flight as the kill lands).
    lines = ran.read_text().splitlines() if ran.exists() else []
    killed = float(stamp.read_text())
    after_kill = [float(line.split()[0]) - killed for line in lines]
    after_kill = [round(t, 3) for t in after_kill if t > 0]
    if xdist:
        # The other worker's backend lives on for a few milliseconds after its postmaster
        # (until it notices): a test or two in flight then may pass, none a second later.
        assert all(t < 1.0 for t in after_kill), (
            f"tests passed this long after the kill: {after_kill}"
        )
    else:
        assert after_kill == [], f"tests passed this long after the kill: {after_kill}"
    assert outcomes.get("passed", 0) < N
    # The killing test's teardown; under xdist also the other worker's test in flight (its
    # call and its teardown).
    assert 1 <= outcomes.get("errors", 0) + outcomes.get("failed", 0) <= (3 if xdist else 1)
    assert output.count("last lines of the server log") == 1, output
    assert output.count("stopped while tests were running; why is in the report of") == 1
    assert "The tests after it were not run." in output
    if not xdist:
        assert "was killed by signal 9 (SIGKILL) while tests were running" in output
        assert "report of test_kill.py::test_kills_the_server." in output
    assert "checkpoint" not in output
    assert "cleanup after the session failed" not in output + result.stderr.str()
    # Short: no traceback from inside pgsandbox (a test whose own query met the dead server
    # shows the driver's, about 30 lines).
    assert len(output.splitlines()) < 110
    # xdist's controller also waits for its workers to exit.
    assert took < (10 if xdist else 5), f"the session took {took:.1f} s to end after the kill"
