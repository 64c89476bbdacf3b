"""No room for a server's files: one message that says which folder is full, how much is
needed and which setting moves it; never an INTERNALERROR."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgsb_helpers import clean_env
from pgsb_helpers import leftovers
from pgsb_helpers import postgres_processes
from pytest_pgsandbox._engine.servers import places

ONE_TEST = "def test_needs_a_database(pg):\n    pg.execute('SELECT 1')\n"


def _mounted(monkeypatch: pytest.MonkeyPatch, shared_cache: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` as the runtime folder (the cluster cache stays where it is)."""
    if not places.is_root() or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    point = Path(tempfile.mkdtemp(prefix="pgsb-full-"))
    point.chmod(0o755)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
        capture_output=True,
        check=False,
        timeout=30,
    )
    if mounted.returncode != 0:
        point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    monkeypatch.setenv("PGSANDBOX_RUNTIME_DIR", str(point / "rt"))
    monkeypatch.setenv("PGSANDBOX_CACHE_DIR", str(shared_cache))
    try:
        yield point / "rt"
    finally:
        subprocess.run(["umount", str(point)], capture_output=True, check=False, timeout=60)
        shutil.rmtree(point, ignore_errors=True)


@pytest.fixture
def small_tmpfs(monkeypatch: pytest.MonkeyPatch, shared_cache: Path) -> Iterator[Path]:
    """A 4 MB file system as the runtime folder: no room for a server."""
    yield from _mounted(monkeypatch, shared_cache, "4m")


@pytest.mark.parametrize("xdist", [False, True])
def test_no_room_for_the_server_says_where_and_how_much(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, small_tmpfs: Path, xdist: bool
) -> None:
    clean_env(monkeypatch)
    pytester.makepyfile(ONE_TEST)
    args = ["-n", "2"] if xdist else []
    result = pytester.runpytest_subprocess(*args, timeout=180)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 1, output
    assert "INTERNALERROR" not in output
    assert "CalledProcessError" not in output
    assert output.count("could not copy the server's files (") == 1, output
    assert "No space left on device" in output
    assert f"The file system of {small_tmpfs} is full" in output
    assert " MB are needed and " in output or "has no room for" in output
    assert "--pg-runtime-dir" in output
    assert postgres_processes(small_tmpfs) == []
    assert [name for name in leftovers(small_tmpfs) if not name.endswith(".lock")] == []


FILLS_THE_DISK = """
from sqlalchemy import text

FILL = (
    "INSERT INTO big SELECT md5(g::text) || md5((g + 1)::text) "
    "FROM generate_series(1, 20000000) g"
)


def test_fills_it_through_psycopg(pg):
    pg.execute("CREATE TABLE big (t text)")
    pg.execute(FILL)


def test_fills_it_through_sqlalchemy(pg_session):
    pg_session.execute(text("CREATE TABLE big (t text)"))
    pg_session.execute(text(FILL))


def test_the_next_test_runs(pg):
    assert pg.fetchval("SELECT 1") == 1
"""


@pytest.fixture
def room_for_a_server(monkeypatch: pytest.MonkeyPatch, shared_cache: Path) -> Iterator[Path]:
    """A 150 MB file system as the runtime folder: a server fits, a big table does not."""
    yield from _mounted(monkeypatch, shared_cache, "150m")


def test_a_test_that_fills_the_disk_is_told_where_and_what_to_do(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, room_for_a_server: Path
) -> None:
    clean_env(monkeypatch)
    pytester.makepyfile(FILLS_THE_DISK)
    result = pytester.runpytest_subprocess("-p", "no:randomly", timeout=300)
    output = result.stdout.str()
    result.assert_outcomes(failed=2, passed=1)
    assert "DiskFull" in output
    # Said in each failed test's report (once each), naming the folder and the setting.
    assert output.count("the PostgreSQL server ran out of room for its data (disk full).") == 2
    assert str(room_for_a_server) in output
    assert "--pg-runtime-dir" in output
    assert "INTERNALERROR" not in output
