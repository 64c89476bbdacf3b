"""``pgsandbox gc`` with bad input: one-line errors, and never a database (or role) of a
run that is still going, whatever its age."""

from __future__ import annotations

import os
import socket

import pytest

from pgsb_helpers import pgsandbox
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.urls import connect

LONG_AGO = {"created": 1.0}  # 1970: older than any --older-than


def _databases(server: LocalCluster) -> set[str]:
    with connect(server.admin) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


@pytest.mark.parametrize("age", ["-1", "0", "-0.5", "nan"])
def test_only_positive_ages(pytester: pytest.Pytester, existing: LocalCluster, age: str) -> None:
    with connect(existing.admin) as conn:
        provision.create_database(conn, "pgsandbox_old_live", {"pid": os.getpid(), **LONG_AGO})
        provision.create_database(conn, "pgsandbox_old_elsewhere", {"host": "x", **LONG_AGO})
    result = pgsandbox(pytester, "gc", "--url", existing.admin.url(), f"--older-than={age}")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 2
    assert "--older-than must be a positive number of hours" in output
    assert len(output.strip().splitlines()) == 1
    assert {"pgsandbox_old_live", "pgsandbox_old_elsewhere"} <= _databases(existing)


def test_what_a_live_run_uses_is_never_dropped(
    pytester: pytest.Pytester, existing: LocalCluster
) -> None:
    here = socket.gethostname()
    with connect(existing.admin) as conn:
        # This process is alive: its run is still going, however old its databases are.
        provision.create_database(conn, "pgsandbox_live_pid", {"pid": os.getpid(), **LONG_AGO})
        # Another machine's run: its pid means nothing here, but it has a session open.
        provision.create_database(conn, "pgsandbox_busy", {"host": "ci-7", **LONG_AGO})
        # Another machine's, old and unused: may go.
        provision.create_database(conn, "pgsandbox_abandoned", {"host": "ci-7", **LONG_AGO})
        # This machine's, its process gone: goes whatever its age.
        provision.create_database(conn, "pgsandbox_dead_pid", {"host": here, "pid": 2**22 + 9})
    with connect(existing.admin.for_db("pgsandbox_busy")):
        result = pgsandbox(pytester, "gc", "--url", existing.admin.url(), "--older-than=0.001")
    assert result.ret == 0, result.stderr.str()
    left = _databases(existing)
    assert {"pgsandbox_live_pid", "pgsandbox_busy"} <= left
    assert not {"pgsandbox_abandoned", "pgsandbox_dead_pid"} & left
    result.stdout.fnmatch_lines_random(
        [
            "reaped database pgsandbox_abandoned (older than 0.001 h)",
            "reaped database pgsandbox_dead_pid (its run has ended)",
        ]
    )


def test_an_unreachable_url_is_one_line(pytester: pytest.Pytester) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://app:hunter2-secret@127.0.0.1:{port}/app"
    result = pgsandbox(pytester, "gc", "--url", url)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 1
    assert "Traceback" not in output
    assert "hunter2-secret" not in output
    lines = [line for line in output.strip().splitlines() if not line.startswith("reaped ")]
    assert lines == [line for line in lines if line.startswith("pgsandbox: could not clean up")]
    assert len(lines) == 1
    assert f"postgresql://app:***@127.0.0.1:{port}/app (--url)" in lines[0]
