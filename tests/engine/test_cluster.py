"""Local servers, for real: start, connect, TCP with a password, failures, clean stop."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pytest_pgsandbox._engine.servers import janitor
from pytest_pgsandbox._engine.servers import places
from pytest_pgsandbox._engine.servers.choice import local_cluster
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import ServerStartError
from pytest_pgsandbox.settings import Settings


def test_start_connect_stop_leaves_nothing(settings: Settings, bin_dir: Path) -> None:
    cluster = local_cluster(settings.with_values(bin_dir=bin_dir))
    cluster.start()
    try:
        assert cluster.process is not None
        with connect(cluster.admin.for_db("pgsandbox")) as conn:
            assert conn.execute("SELECT current_setting('fsync')").fetchone() == ("off",)
            # Loaded by the server once, not by every backend that runs PL/pgSQL.
            preload = conn.execute("SHOW shared_preload_libraries").fetchone()
            assert preload == ("plpgsql",)
            version = conn.info.server_version // 10000
        assert str(version) == cluster.version.split(".")[0]
        assert cluster.admin.is_socket
        assert os.stat(cluster.folder).st_mode & 0o777 == 0o700
    finally:
        cluster.stop()
    assert not cluster.folder.exists()
    assert janitor.records(settings.runtime_dir or Path()) == []
    assert cluster.process.poll() is not None


@pytest.mark.skipif(not places.is_root(), reason="only root has a server user")
def test_as_root_the_server_runs_as_nobody(settings: Settings) -> None:
    cluster = local_cluster(settings.with_values(bin_dir=Path("embedded")))
    cluster.start()
    try:
        assert cluster.process is not None
        status = Path(f"/proc/{cluster.process.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert int(uid_line.split()[1]) == places.server_user().uid  # type: ignore[union-attr]
    finally:
        cluster.stop()


@pytest.mark.skipif(not places.is_root(), reason="only root has a server user")
def test_as_root_only_root_is_the_superuser_on_the_socket(
    settings: Settings, bin_dir: Path
) -> None:
    """peer for the superuser: root's processes get in without a password; the server's
    system user reaches the socket but not as the superuser, even with its password; every
    other role logs in with its password; other users cannot reach the socket at all."""
    cluster = local_cluster(settings.with_values(bin_dir=bin_dir))
    cluster.start()
    try:
        no_password = dataclasses.replace(cluster.admin, password=None)
        with connect(no_password) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
            conn.execute("CREATE ROLE probe LOGIN PASSWORD 'probe-pw'")
        psql = str(cluster.binaries.exe("psql"))

        def psql_as(user: str, role: str, password: str) -> subprocess.CompletedProcess[str]:
            argv = [psql, "-h", str(cluster.folder), "-U", role, "-d", "postgres"]
            return subprocess.run(
                [*argv, "-Atc", "SELECT current_user"],
                env={"PGPASSWORD": password, "PATH": "/usr/bin:/bin"},
                user=user,
                group=user if user != "nobody" else "nogroup",
                extra_groups=[],
                cwd="/",
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        assert psql_as("nobody", "probe", "probe-pw").stdout.strip() == "probe"
        refused = psql_as("nobody", "postgres", cluster.admin.password or "")
        assert refused.returncode != 0
        assert 'Peer authentication failed for user "postgres"' in refused.stderr
        other = psql_as("daemon", "probe", "probe-pw")
        assert other.returncode != 0
        assert "Permission denied" in other.stderr
    finally:
        cluster.stop()


def test_tcp_listens_on_localhost_with_a_random_password(settings: Settings) -> None:
    cluster = local_cluster(settings.with_values(bin_dir=Path("embedded"), tcp=True))
    cluster.start()
    try:
        port = cluster.options.port
        assert port > 0
        password = cluster.admin.password
        assert password
        assert len(password) >= 24
        tcp = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        with psycopg.connect(f"{tcp} password={password}") as conn:
            assert conn.execute("SELECT current_setting('listen_addresses')").fetchone() == (
                "127.0.0.1",
            )
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"{tcp} password=wrong").close()
    finally:
        cluster.stop()


def test_each_server_gets_its_own_password(settings: Settings) -> None:
    a = local_cluster(settings.with_values(bin_dir=Path("embedded"), tcp=True))
    b = local_cluster(settings.with_values(bin_dir=Path("embedded"), tcp=True))
    a.start()
    b.start()
    try:
        assert a.admin.password != b.admin.password
    finally:
        a.stop()
        b.stop()


def test_a_port_in_use_is_named(settings: Settings) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cluster = local_cluster(settings.with_values(bin_dir=Path("embedded"), port=port))
        with pytest.raises(ServerStartError) as info:
            cluster.start()
    assert f"port {port} on 127.0.0.1 is already in use" in str(info.value)
    assert "--pg-port" in str(info.value)
    assert not cluster.folder.exists()


def test_a_bad_server_setting_shows_the_log(settings: Settings) -> None:
    bad = settings.with_values(bin_dir=Path("embedded"), conf=(("no_such_setting", "1"),))
    cluster = local_cluster(bad)
    with pytest.raises(ServerStartError) as info:
        cluster.start()
    message = str(info.value)
    assert "no_such_setting" in message
    assert "last lines of the server log" in message
    assert "--pg-conf" in message
    assert not cluster.folder.exists()


def test_conf_reaches_the_server(settings: Settings) -> None:
    cluster = local_cluster(
        settings.with_values(bin_dir=Path("embedded"), conf=(("work_mem", "12MB"),))
    )
    cluster.start()
    try:
        with connect(cluster.admin) as conn:
            assert conn.execute("SHOW work_mem").fetchone() == ("12MB",)
    finally:
        cluster.stop()


def test_servers_of_a_dead_owner_are_reaped(settings: Settings, tmp_path: Path) -> None:
    runtime = settings.runtime_dir
    assert runtime is not None
    script = tmp_path / "owner.py"
    script.write_text(
        "import os, sys\n"
        "from pathlib import Path\n"
        "from pytest_pgsandbox.settings import Settings\n"
        "from pytest_pgsandbox._engine.servers.choice import local_cluster\n"
        f"s = Settings(runtime_dir=Path({str(runtime)!r}),"
        f" cache_dir=Path({str(settings.cache_dir)!r}), bin_dir=Path('embedded'))\n"
        "c = local_cluster(s)\n"
        "c.start()\n"
        "print(c.name, c.process.pid, flush=True)\n"
        "os._exit(0)  # dies without stopping anything, like kill -9\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    name, pid = out[0], int(out[1])
    assert janitor.cmdline(pid) is not None, "the orphaned server should still run"
    reaped = janitor.reap(runtime)
    assert any(name in line for line in reaped)
    assert not (runtime / name).exists()
    assert janitor.cmdline(pid) is None


@pytest.mark.skipif(not shutil.which("ipcs"), reason="needs ipcs to look at shared memory")
def test_a_killed_server_leaves_no_shared_memory(settings: Settings) -> None:
    cluster = local_cluster(settings.with_values(bin_dir=Path("embedded")))
    cluster.start()
    assert cluster.process is not None
    pidfile = (cluster.folder / "data" / "postmaster.pid").read_text().splitlines()
    shmid = pidfile[6].split()[1]
    with connect(cluster.admin) as conn:
        assert conn.execute("SHOW dynamic_shared_memory_type").fetchone() == ("mmap",)
    os.kill(cluster.process.pid, signal.SIGKILL)
    cluster.process.wait(10)
    cluster.stop()
    segments = subprocess.run(["ipcs", "-m"], capture_output=True, text=True, check=True)
    assert f" {shmid} " not in segments.stdout


def test_libraries_asked_for_are_loaded_beside_plpgsql(settings: Settings, bin_dir: Path) -> None:
    """A pg_conf ``shared_preload_libraries`` keeps its libraries; plpgsql is added once."""
    conf = (("shared_preload_libraries", "plpgsql, auto_explain"),)
    cluster = local_cluster(settings.with_values(bin_dir=bin_dir, conf=conf))
    cluster.start()
    try:
        with connect(cluster.admin.for_db("pgsandbox")) as conn:
            preload = conn.execute("SHOW shared_preload_libraries").fetchone()
            # auto_explain is loaded: its settings exist.
            explain = conn.execute("SHOW auto_explain.log_min_duration").fetchone()
        assert preload == ("plpgsql,auto_explain",)
        assert explain == ("-1",)
    finally:
        cluster.stop()
