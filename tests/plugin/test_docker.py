"""server=docker on a live daemon: a container from any image, or a clear error without one.

Each container costs seconds (the image initialises, then restarts), so each session here
covers several things at once: every isolation, the network, the session database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgsb_helpers import clean_env
from pytest_pgsandbox._engine.servers import docker as pgdocker
from pytest_pgsandbox._engine.servers.docker import daemon_problem

NO_DAEMON = daemon_problem()
if NO_DAEMON is not None and os.environ.get("PGSB_TESTS_NEED_DOCKER"):
    # CI prepared a daemon: these tests must run, not skip.
    raise RuntimeError(f"PGSB_TESTS_NEED_DOCKER is set, and {NO_DAEMON}")
needs_daemon = pytest.mark.skipif(
    NO_DAEMON is not None, reason=f"needs a Docker daemon: {NO_DAEMON}"
)
IMAGE = "postgres:16"
# On one xdist worker, one after another: the tests count the daemon's containers of ours.
pytestmark = pytest.mark.xdist_group("docker")
ABSENT_RYUK = "testcontainers/ryuk:0.0.0-absent"  # a tag no registry reachable here has


def test_without_a_daemon_the_error_says_what_to_do(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_env(monkeypatch)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/no-docker.sock")
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "--pg-server=docker", "--pg-image=postgis/postgis:16-3.4"
    )
    assert result.ret == 1  # the session stops before any test
    result.assert_outcomes()
    result.stdout.fnmatch_lines(
        [
            "postgresql: Docker image postgis/postgis:16-3.4",
            "*server=docker (image postgis/postgis:16-3.4): no Docker daemon answered: its socket "
            "unix://*/no-docker.sock (DOCKER_HOST) does not exist*",
            "*Start Docker (or point DOCKER_HOST at a daemon*--pg-server=local*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


@pytest.fixture
def dclient() -> Iterator[Any]:
    found = pgdocker.client()
    yield found
    found.close()


def ours(dclient: Any, **labels: str) -> set[str]:
    """Names of the containers we labelled (with these labels too), running or not."""
    wanted = [f"{pgdocker.LABEL}=1", *(f"{k}={v}" for k, v in labels.items())]
    return {c.name for c in dclient.containers.list(all=True, filters={"label": wanted})}


RECORD_PID = """
import os


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        with open(os.environ["SESSION_PIDS"], "a") as f:
            f.write(f"{os.getpid()}\\n")
"""


@pytest.fixture
def session_pids(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file that the test's pytester sessions write their pids to: the owners of the
    containers they make (other tests' sessions, on another xdist worker, make and leave
    containers of their own meanwhile, some on purpose)."""
    pids = pytester.path / "session-pids.txt"
    monkeypatch.setenv("SESSION_PIDS", str(pids))
    pytester.makeconftest(RECORD_PID)
    return pids


def left_by(dclient: Any, pids: Path) -> dict[str, Any]:
    """The containers still there (running or not) that these sessions made: {name: labels}."""
    owners = {f"{socket.gethostname()} {pid}" for pid in pids.read_text().split()}
    assert owners, "no session recorded its pid"
    return {
        c.name: c.labels
        for c in dclient.containers.list(all=True, filters={"label": f"{pgdocker.LABEL}=1"})
        if (c.labels or {}).get(pgdocker.OWNER_LABEL) in owners
    }


@pytest.fixture
def docker_env(monkeypatch: pytest.MonkeyPatch, runtime: Path) -> Path:
    """A clean environment with a runtime folder of its own (for the run and reuse locks)."""
    clean_env(monkeypatch)
    return runtime


# Every isolation, without a template (the session database of a private container) and
# twice each: the second test of a kind finds nothing of the first.
ISOLATIONS = """
import os
import docker
import psycopg
import pytest


def record(pg_server):
    with open(os.environ["SEEN"], "a") as f:
        f.write(pg_server.network_host + "\\n")


def write_and_check(pg, other):
    assert pg.fetchval("SELECT to_regclass('items') IS NULL")
    pg.execute("CREATE TABLE items (id int)")
    pg.execute("INSERT INTO items VALUES (1)")
    pg.conn.commit()
    if other:
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)


@pytest.mark.parametrize("n", range(2))
def test_transaction(pg, pg_server, n):
    assert pg.fetchval("SHOW server_version").startswith("16.")
    assert pg.fetchval("SHOW shared_preload_libraries") == "plpgsql"
    assert pg_server.admin.host == "127.0.0.1"
    record(pg_server)
    write_and_check(pg, other=False)


@pytest.mark.pg(isolation="reset")
@pytest.mark.parametrize("n", range(2))
def test_reset(pg, pg_server, n):
    record(pg_server)
    write_and_check(pg, other=True)


@pytest.mark.pg(isolation="clone")
@pytest.mark.parametrize("n", range(2))
def test_clone(pg, pg_server, n):
    record(pg_server)
    write_and_check(pg, other=True)


def test_another_container_reaches_it_by_name(pg_server):
    client = docker.from_env()
    out = client.containers.run(
        "postgres:16",
        ["psql", "-h", pg_server.network_host, "-p", str(pg_server.network_port),
         "-U", pg_server.admin.user, "-d", "postgres", "-Atc", "SELECT 40 + 2"],
        environment={"PGPASSWORD": pg_server.admin.password},
        network=pg_server.network,
        remove=True,
    )
    assert out.decode().strip() == "42"
    assert pg_server.network == "pgsandbox" and pg_server.network_port == 5432
    # Its data is in RAM (a tmpfs on PGDATA), as a local server's: copies are cheap there.
    with psycopg.connect(pg_server.admin.url()) as conn:
        data = conn.execute("SHOW data_directory").fetchone()[0]
    found = [c for c in client.containers.list() if c.name == pg_server.network_host]
    assert found and data in (found[0].attrs["HostConfig"]["Tmpfs"] or {})
    assert pg_server.data_in_ram
"""


@needs_daemon
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_each_isolation_runs_in_one_container_that_goes_away(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    docker_env: Path,
    dclient: Any,
    session_pids: Path,
    workers: list[str],
) -> None:
    seen = pytester.path / "seen.txt"
    monkeypatch.setenv("SEEN", str(seen))
    pytester.makepyfile(ISOLATIONS)
    result = pytester.runpytest_subprocess(
        "--pg-server=docker", f"--pg-image={IMAGE}", "--pg-start-timeout=120", *workers
    )
    result.assert_outcomes(passed=7)
    if not workers:
        result.stdout.fnmatch_lines(["postgresql: PostgreSQL 16.* in Docker (postgres:16*"])
    # One container served every test (and every worker); it is gone afterwards.
    assert len(set(seen.read_text().split())) == 1
    assert left_by(dclient, session_pids) == {}
    assert not list(docker_env.glob("run-*.docker"))


REUSED = """
import pytest


@pytest.mark.parametrize("n", range(4))
def test_uses_the_template(pg, n):
    assert pg.fetchval("SELECT count(*) FROM customers") == 1
    pg.execute("INSERT INTO customers VALUES (2)")
"""


@needs_daemon
def test_reuse_twice_in_a_row_one_container_attached_by_the_second_run(
    pytester: pytest.Pytester, docker_env: Path, dclient: Any
) -> None:
    # An image name of its own: no other reusable container of that image can be around.
    image = "pgsandbox-tests/reuse:16"
    dclient.images.get(IMAGE).tag(image)
    kept = {"pgsandbox.reuse": image}
    try:
        assert ours(dclient, **kept) == set()
        pytester.makefile(
            ".sql", schema="CREATE TABLE customers (id int); INSERT INTO customers VALUES (1);"
        )
        pytester.makeini("[pytest]\npg_schema = sql:schema.sql\n")
        pytester.makepyfile(REUSED)
        args = ["--pg-server=docker", f"--pg-image={image}", "--pg-reuse", "--pg-start-timeout=120"]
        # From scratch under two workers: they make one kept container, not one each.
        first = pytester.runpytest_subprocess(*args, "-n", "2")
        first.assert_outcomes(passed=4)
        assert len(ours(dclient, **kept)) == 1
        second = pytester.runpytest_subprocess(*args)
        second.assert_outcomes(passed=4)
        second.stdout.fnmatch_lines(
            [
                f"postgresql: PostgreSQL 16.* in Docker ({image}, container pgsandbox-*, kept "
                "for reuse (attached)) at *, ready in *",
                "postgresql: template reused*",
            ]
        )
        assert len(ours(dclient, **kept)) == 1
    finally:
        for found in dclient.containers.list(
            all=True, filters={"label": f"{pgdocker.REUSE_LABEL}={image}"}
        ):
            found.remove(force=True, v=True)
        dclient.images.remove(image)


EXTENSION_CONTROL = (
    "comment = 'a test-only extension'\ndefault_version = '1.0'\nrelocatable = true\n"
)
EXTENSION_SQL = "CREATE FUNCTION pgsb_answer() RETURNS int LANGUAGE sql AS 'SELECT 42';\n"


@needs_daemon
def test_an_extension_only_a_custom_image_has_is_created_by_pg_extensions(
    pytester: pytest.Pytester, docker_env: Path, dclient: Any, tmp_path: Path
) -> None:
    # A PostGIS-like image, built here: the extension exists in it and nowhere else.
    context = tmp_path / "image"
    context.mkdir()
    (context / "pgsb_answer.control").write_text(EXTENSION_CONTROL)
    (context / "pgsb_answer--1.0.sql").write_text(EXTENSION_SQL)
    extdir = "/usr/lib/postgresql/16/share/postgresql/extension/"
    (context / "Dockerfile").write_text(
        f"FROM {IMAGE}\nCOPY pgsb_answer.control pgsb_answer--1.0.sql {extdir}\n"
    )
    image = "pgsandbox-tests/with-extension:16"
    dclient.images.build(path=str(context), tag=image, rm=True)
    try:
        pytester.makeini("[pytest]\npg_extensions = pgsb_answer\n")
        pytester.makepyfile(
            "def test_it_is_there(pg):\n"
            "    assert pg.fetchval('SELECT pgsb_answer()') == 42\n"
            '    assert pg.fetchval("SELECT extversion FROM pg_extension '
            "WHERE extname = 'pgsb_answer'\") == '1.0'\n"
        )
        result = pytester.runpytest_subprocess(
            "--pg-server=docker", f"--pg-image={image}", "--pg-start-timeout=120"
        )
        result.assert_outcomes(passed=1)
    finally:
        dclient.images.remove(image, force=True)


@needs_daemon
def test_without_the_reaper_image_it_says_so_once_and_cleans_up_itself(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    docker_env: Path,
    dclient: Any,
    session_pids: Path,
) -> None:
    monkeypatch.setenv("RYUK_CONTAINER_IMAGE", ABSENT_RYUK)
    seen = pytester.path / "seen.txt"
    monkeypatch.setenv("SEEN", str(seen))
    pytester.makepyfile(
        "import os\n\n"
        "def test_a(pg, pg_server):\n"
        "    with open(os.environ['SEEN'], 'a') as f:\n"
        "        f.write(pg_server.network_host + '\\n')\n\n"
        "def test_b(pg):\n    pass\n"
    )
    result = pytester.runpytest_subprocess(
        "--pg-server=docker", f"--pg-image={IMAGE}", "--pg-start-timeout=120", "-q"
    )
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    note = f"postgresql: testcontainers' reaper is not running: its image {ABSENT_RYUK} could not"
    assert out.count(note) == 1, out
    assert "removed by the next run or by pgsandbox gc" in out
    assert "Check the image name" not in out
    # The session's own container is gone, and no other one it made is left.
    (name,) = set(seen.read_text().split())
    assert name not in {c.name for c in dclient.containers.list(all=True)}, out
    assert left_by(dclient, session_pids) == {}, out


@needs_daemon
def test_an_image_that_cannot_be_pulled_is_named(
    pytester: pytest.Pytester, docker_env: Path
) -> None:
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "--pg-server=docker", "--pg-image=pgsandbox-tests/absent:1"
    )
    assert result.ret == 1  # the session stops before any test, with one message
    result.assert_outcomes()
    result.stdout.fnmatch_lines(
        ["*the image pgsandbox-tests/absent:1 is not on this machine and pulling it failed*"]
    )


KILLED = """
import os, pathlib, time

def test_waits(pg):
    pathlib.Path(os.environ["STARTED"]).write_text("")
    time.sleep(120)
"""


@needs_daemon
def test_after_kill_9_the_next_run_removes_the_container(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    docker_env: Path,
    dclient: Any,
) -> None:
    # Without the reaper: what removes the container is ours alone.
    monkeypatch.setenv("RYUK_CONTAINER_IMAGE", ABSENT_RYUK)
    started = pytester.path / "started"
    monkeypatch.setenv("STARTED", str(started))
    pytester.makepyfile(test_killed=KILLED)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "test_killed.py",
            "--pg-server=docker",
            f"--pg-image={IMAGE}",
            "--pg-start-timeout=120",
        ],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 150
    while not started.exists():
        assert proc.poll() is None, "the session ended before its test started"
        assert time.monotonic() < deadline, "the session's test never started"
        time.sleep(0.2)
    owner = f"{pgdocker.OWNER_LABEL}={socket.gethostname()} {proc.pid}"
    left = {c.name for c in dclient.containers.list(all=True, filters={"label": owner})}
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(left) == 1  # still there: nobody has removed it yet
    assert {c.name for c in dclient.containers.list(all=True, filters={"label": owner})} == left
    pytester.makepyfile(test_next="def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "test_next.py", "--pg-server=docker", f"--pg-image={IMAGE}", "--pg-start-timeout=120"
    )
    result.assert_outcomes(passed=1)
    (name,) = left
    assert dclient.containers.list(all=True, filters={"label": owner}) == []
    # Any run that starts a container reaps dead runs' first: under xdist another test's
    # session may have been quicker than ours, and then it said so in its own output.
    said = f"postgresql: removed container {name} (its test run, pid {proc.pid}, has ended)"
    if said not in result.stdout.str():
        print(f"{name} was removed by another session running at the same time")


@needs_daemon
def test_gc_removes_containers_of_ended_runs_only(
    docker_env: Path, dclient: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_pgsandbox.cli.main import main

    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    common = {pgdocker.LABEL: "1", pgdocker.IMAGE_LABEL: IMAGE}
    made = []
    try:
        for pid in (int(ended.stdout), os.getpid()):
            made.append(
                dclient.containers.run(
                    IMAGE,
                    ["sleep", "300"],
                    entrypoint=[],
                    detach=True,
                    labels={**common, **pgdocker._owner(pid)},
                )
            )
        assert main(["gc"]) == 0
        out = capsys.readouterr().out
        # Unless another xdist worker's Docker session, which reaps dead runs' containers
        # when it starts, was quicker: then gc found nothing, and the names below still hold.
        said = f"reaped container {made[0].name} (its test run, pid {ended.stdout.strip()}"
        assert said in out or "nothing to reap" in out
        assert made[1].name not in out
        names = {c.name for c in dclient.containers.list(all=True)}
        assert made[0].name not in names
        assert made[1].name in names
    finally:
        for found in made:
            with contextlib.suppress(Exception):  # gone already: what the test wants
                found.remove(force=True)


@needs_daemon
def test_a_daemon_speaking_api_1_41_is_used_at_its_version(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    docker_env: Path,
    dclient: Any,
    session_pids: Path,
) -> None:
    import docker

    from docker_api import api_1_41_daemon

    monkeypatch.setenv("RYUK_CONTAINER_IMAGE", ABSENT_RYUK)
    with api_1_41_daemon(pytester.path) as host:
        monkeypatch.setenv("DOCKER_HOST", host)
        pinned = docker.DockerClient(
            base_url=host, version=docker.constants.DEFAULT_DOCKER_API_VERSION
        )
        with pytest.raises(
            docker.errors.APIError, match=r"is too new\. Maximum supported API version is 1\.41"
        ):
            pinned.containers.list()  # what a client fixed at the SDK's default meets there
        pinned.close()
        assert daemon_problem() is None
        negotiated = pgdocker.client()
        assert negotiated.api.api_version == "1.41"
        negotiated.close()
        pytester.makepyfile(
            "import pytest\n\n"
            "def test_t(pg):\n    assert pg.fetchval('SELECT 1') == 1\n\n"
            "@pytest.mark.pg(isolation='clone')\n"
            "def test_c(pg):\n    assert pg.fetchval('SELECT 1') == 1\n"
        )
        result = pytester.runpytest_subprocess(
            "--pg-server=docker", f"--pg-image={IMAGE}", "--pg-start-timeout=120"
        )
        result.assert_outcomes(passed=2)
    assert left_by(dclient, session_pids) == {}
