"""No password in any output, report, log file or server log, even with every statement
logged (``log_statement=all``) and a server that dies mid-session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgsb_helpers import clean_env

CONFTEST = """
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

OUT = Path({out!r})
FOUND = {{"passwords": [], "log_modes": []}}


@pytest.fixture(scope="session", autouse=True)
def _collect(pg_server):
    FOUND["passwords"].append(pg_server.admin.password)
    yield
    runtime = Path(os.environ["PGSANDBOX_RUNTIME_DIR"])
    logs = OUT / "server-logs"
    logs.mkdir(exist_ok=True)
    for log in runtime.glob("*.log"):  # before the session removes them
        FOUND["log_modes"].append(stat.S_IMODE(log.stat().st_mode))
        shutil.copy(log, logs / log.name)
    (OUT / "found.json").write_text(json.dumps(FOUND))


@pytest.fixture
def found():
    return FOUND
"""

TESTS = """
import os
import signal

import psycopg
import pytest


@pytest.mark.pg(isolation="reset")
def test_logs_in_as_the_role(pg, found):
    found["passwords"].append(psycopg.conninfo.conninfo_to_dict(pg.url)["password"])
    with psycopg.connect(pg.url) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "app"


def test_fails_and_shows_its_url(pg):
    assert pg.fetchval("SELECT 1") == 2


def test_kills_the_server(pg, pg_server):
    os.kill(pg_server.process.pid, signal.SIGKILL)
    pg_server.process.wait(10)


def test_after_the_server_died(pg):
    pass
"""


def test_no_password_anywhere_with_every_statement_logged(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    runtime: Path,
    shared_cache: Path,
) -> None:
    clean_env(monkeypatch)
    pytester.makeini("[pytest]\npg_role = app\n")
    pytester.makeconftest(CONFTEST.format(out=str(tmp_path)))
    pytester.makepyfile(test_leaks=TESTS)
    junit, log = tmp_path / "junit.xml", tmp_path / "debug.log"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:randomly",
        "-rA",
        "-vv",
        "--pg-conf=log_statement=all",
        "--pg-conf=log_min_messages=debug1",
        "--pg-tcp",
        f"--junitxml={junit}",
        f"--log-file={log}",
        "--log-file-level=DEBUG",
        timeout=180,
    )
    # The killer's teardown meets the dead server, and the session stops there.
    result.assert_outcomes(passed=2, failed=1, errors=1)
    found = json.loads((tmp_path / "found.json").read_text())
    passwords = set(found["passwords"])
    for meta in shared_cache.glob("*/*/meta.json"):  # the cached clusters' own passwords
        passwords.add(json.loads(meta.read_text())["password"])
    assert len(passwords) >= 2
    assert all(passwords)
    server_logs = "\n".join(p.read_text() for p in (tmp_path / "server-logs").iterdir())
    assert "statement: ALTER ROLE" in server_logs  # every statement was logged
    assert found["log_modes"]
    assert all(mode == 0o600 for mode in found["log_modes"])
    everything = {
        "output": result.stdout.str() + result.stderr.str(),
        "junit": junit.read_text(),
        "log file": log.read_text(),
        "server log": server_logs,
    }
    assert "last lines of the server log" in everything["output"]
    for where, text in everything.items():
        for password in passwords:
            assert password not in text, f"a password is in the {where}"
