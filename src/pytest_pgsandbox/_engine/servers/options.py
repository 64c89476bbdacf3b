"""What a local server is started with, shared by the cluster, its caches and the janitor.

The settings a server is started with (``ClusterOptions``), the names every local server
uses, and the small steps both a fresh cluster and a cached one take (run a server tool,
read a log's tail, make a password). Kept apart so that the cluster, the caches that feed
it and the janitor that records and reaps it need not import one another in a circle.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pytest_pgsandbox._engine.servers.places import RunAs
from pytest_pgsandbox._engine.servers.places import spawn_args
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox.errors import ServerStartError

SUPERUSER = "postgres"
CACHE_LAYOUT = 3  # bump when what a cached cluster contains changes
SESSION_DB = "pgsandbox"
SOCKET_PORT = 5432
LOG_TAIL = 40

# Durability buys nothing for a server whose data is thrown away.
TEST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Dynamic shared memory as files in the data folder, not in /dev/shm: a server that is
    # killed (SIGKILL, OOM killer) then leaves nothing behind once its folder is removed.
    "dynamic_shared_memory_type": "mmap",
}
# Loaded once by the server, not by each new backend that runs PL/pgSQL: reset's write
# tracking, the end of a short-lived async connection and many applications' triggers run it,
# and a backend that loads it itself pays about a millisecond (bench/async_fixtures.py).
PRELOAD = "plpgsql"


def with_preload(settings: dict[str, str]) -> dict[str, str]:
    """``settings`` with ``PRELOAD`` added to ``shared_preload_libraries`` (kept first: the
    libraries a user asks for with ``pg_conf`` stay as given)."""
    given = [x.strip() for x in settings.get("shared_preload_libraries", "").split(",")]
    libraries = [x for x in given if x]
    if PRELOAD not in (x.strip("'\"") for x in libraries):
        libraries.append(PRELOAD)
    return {**settings, "shared_preload_libraries": ",".join(libraries)}


@dataclass
class ClusterOptions:
    tcp: bool = False
    port: int = 0
    conf: Sequence[tuple[str, str]] = ()
    start_timeout: float = 60.0
    reusable: bool = False
    # Shared by the xdist workers of one run: ``run`` is the run's id, ``owner_pid`` the
    # controller, which stops it; it is reaped if that process dies.
    run: str | None = None
    owner_pid: int | None = None
    # A reusable server's project (the folder its runs start from): only runs of that
    # project attach to it. ``by``: who started it ("pgsandbox start", "a test run").
    project: str | None = None
    by: str = ""

    @property
    def outlives_session(self) -> bool:
        return self.reusable or self.run is not None


def read_tail(path: Path, lines: int = LOG_TAIL) -> list[str]:
    """The last ``lines`` lines of a server log, passwords masked (they are shown)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [mask(line) for line in text.splitlines()[-lines:]]


def run_tool(argv: list[str], run_as: RunAs | None, timeout: float, what: str) -> None:
    try:
        subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=True, **spawn_args(run_as)
        )
    except subprocess.CalledProcessError as exc:
        out = (exc.stdout or "") + (exc.stderr or "")
        raise ServerStartError.with_log(
            f"{what} failed with exit code {exc.returncode}: {' '.join(argv)}",
            out.splitlines()[-LOG_TAIL:],
        ) from None
    except subprocess.TimeoutExpired:
        raise ServerStartError(
            f"{what} did not finish within {timeout:g} s: {' '.join(argv)}. "
            "Raise --pg-start-timeout if this machine is very slow."
        ) from None


def new_password() -> str:
    return secrets.token_urlsafe(24)


class DataSource(Protocol):
    """Where a new local server's data folder is copied from (an initdb cache, or a cached
    cluster that already holds the templates)."""

    def get(self) -> tuple[Path, str, bool]:
        """The folder to copy, its superuser's password, and whether it was built just now."""
