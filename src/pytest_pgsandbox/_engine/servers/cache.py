"""Cluster caches: data folders prepared once and copied for every new local server.

- ``InitdbCache``: a fresh ``initdb`` per set of binaries (with the built-in session database).
- ``TemplateClusterCache``: that, plus the template built from one set of schema inputs, so
  that a throw-away server starts with its template already in place.

Each entry is made in a staging server under a file lock, stopped cleanly, and moved into
the cache; ``meta.json`` (mode 0600, written last) marks it complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from filelock import FileLock
from filelock import Timeout
from psycopg.rows import TupleRow

from pytest_pgsandbox._engine.clock import dbclock
from pytest_pgsandbox._engine.servers import roles
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.servers.discovery import PgBinaries
from pytest_pgsandbox._engine.servers.options import CACHE_LAYOUT
from pytest_pgsandbox._engine.servers.options import SESSION_DB
from pytest_pgsandbox._engine.servers.options import SUPERUSER
from pytest_pgsandbox._engine.servers.options import ClusterOptions
from pytest_pgsandbox._engine.servers.options import new_password
from pytest_pgsandbox._engine.servers.options import run_tool
from pytest_pgsandbox._engine.servers.places import RunAs
from pytest_pgsandbox._engine.servers.places import copy_tree
from pytest_pgsandbox._engine.servers.places import remove_tree
from pytest_pgsandbox._engine.servers.places import write_private_json
from pytest_pgsandbox._engine.servers.provision import create_database
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import ServerStartError


@dataclass
class InitdbCache:
    """A freshly initialised cluster per set of binaries, copied for every new server."""

    root: Path
    binaries: PgBinaries
    run_as: RunAs | None
    runtime: Path
    timeout: float

    @property
    def entry(self) -> Path:
        return self.root / "initdb" / f"{self.binaries.key}-v{CACHE_LAYOUT}"

    def get(self) -> tuple[Path, str, bool]:
        """(data folder, superuser password, whether it was built just now)."""
        return _cached(self.entry, self.timeout, self._build)

    def prune(self) -> list[str]:
        return prune(self.root)

    def _build(self, entry: Path) -> str:
        def initdb(staging: Path, data: Path) -> str:
            password = new_password()
            pwfile = staging / "pw"
            pwfile.write_text(password + "\n")
            pwfile.chmod(0o600)
            if self.run_as is not None:
                os.chown(pwfile, self.run_as.uid, self.run_as.gid)
            argv = [str(self.binaries.exe("initdb")), "-D", str(data), "-U", SUPERUSER]
            argv += [f"--pwfile={pwfile}", "-A", "scram-sha-256", "-E", "UTF8"]
            argv += ["--no-locale", "--no-sync"]
            run_tool(argv, self.run_as, self.timeout, "initdb")
            pwfile.unlink()
            return password

        def prepare(server: LocalCluster) -> None:
            # Create the session database once here, so that every copy already has it.
            # The clock goes into template1 first: every database made from it has it.
            with connect(server.admin.for_db("template1"), timeout=self.timeout) as conn:
                dbclock.install(conn)
            with connect(server.admin, timeout=self.timeout) as conn:
                create_session_db(conn)
                # initdb hashed the password with 4096 iterations, which costs
                # milliseconds per connection; the first one of every copy pays it.
                roles.set_password(conn, SUPERUSER, server.admin.password or "")

        return _snapshot(self, entry, initdb, prepare)


@dataclass
class TemplateClusterCache:
    """A cluster that already holds the template for one set of inputs.

    Copied instead of the plain initdb cache, it gives a private server whose template is
    there from the start: an unchanged schema is not built again, even across runs whose
    servers are thrown away. The newest ``KEEP`` entries per set of binaries are kept.
    """

    base: InitdbCache
    digest: str
    build: Callable[[ConnInfo], object]

    KEEP = 3

    @property
    def entry(self) -> Path:
        name = f"{self.base.binaries.key}-v{CACHE_LAYOUT}-{self.digest[:16]}"
        return self.base.root / "templates" / name

    def get(self) -> tuple[Path, str, bool]:
        entry = self.entry
        got = _cached(entry, LOCK_SECONDS, self._build)
        if got[2]:
            self._evict(entry)
        return got

    def _build(self, entry: Path) -> str:
        source, password, _built = self.base.get()

        def copy(_staging: Path, data: Path) -> str:
            copy_tree(source, data)
            return password

        def prepare(server: LocalCluster) -> None:
            self.build(server.admin)

        return _snapshot(self.base, entry, copy, prepare)

    def _evict(self, keep: Path) -> None:
        prefix = f"{self.base.binaries.key}-v{CACHE_LAYOUT}-"
        entries = sorted(
            (p for p in keep.parent.glob(prefix + "*") if p.is_dir() and p != keep),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in entries[self.KEEP - 1 :]:
            remove_tree(old)


LOCK_SECONDS = 900.0  # building a template may take a while: migrations
# A cache in RAM must not grow without bound: binaries that were reinstalled (a new virtualenv)
# get new entries, and old ones are never asked for again. Least recently used go first.
KEEP_INITDB = 4
KEEP_TEMPLATES = 8


def prune(root: Path) -> list[str]:
    """Remove the least recently used cache entries beyond the limits; returns their names."""
    removed = []
    for kind, keep in (("initdb", KEEP_INITDB), ("templates", KEEP_TEMPLATES)):
        folder = root / kind
        if not folder.is_dir():
            continue
        entries = sorted(
            (p for p in folder.iterdir() if p.is_dir()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in entries[keep:]:
            lock = FileLock(str(old) + ".lock", timeout=0)
            try:
                with lock:  # not while another process is building it
                    remove_tree(old)
            except Timeout:
                continue
            with contextlib.suppress(FileNotFoundError):
                Path(lock.lock_file).unlink()
            removed.append(f"{kind}/{old.name}")
    return removed


def _cached(entry: Path, timeout: float, build: Callable[[Path], str]) -> tuple[Path, str, bool]:
    """An entry of a cluster cache: (data folder, password, built now?), built under a lock."""
    meta = entry / "meta.json"
    if meta.exists():
        with contextlib.suppress(OSError):
            os.utime(entry)  # recently used: pruned last
        return entry / "data", json.loads(meta.read_text())["password"], False
    entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with FileLock(str(entry) + ".lock", timeout=timeout):
            if meta.exists():  # built by another process while we waited
                return entry / "data", json.loads(meta.read_text())["password"], False
            password = build(entry)
        prune(entry.parent.parent)
    except Timeout:
        raise ServerStartError(
            f"waited {timeout:.0f} s for another process to finish preparing the cluster "
            f"cache {entry}. If no other test run is active, remove {entry}.lock and try again."
        ) from None
    return entry / "data", password, True


def _snapshot(
    cache: InitdbCache,
    entry: Path,
    make_data: Callable[[Path, Path], str],
    prepare: Callable[[LocalCluster], None],
) -> str:
    """Make a data folder in a staging server, run ``prepare`` on it, and keep the result.

    ``make_data(staging, data)`` creates the data folder and returns the superuser's
    password; the server is stopped cleanly before its folder becomes the cache ``entry``.
    """
    remove_tree(entry)
    staging = Path(tempfile.mkdtemp(prefix="staging-", dir=cache.runtime))
    try:
        if cache.run_as is not None:
            os.chown(staging, cache.run_as.uid, cache.run_as.gid)
        data = staging / "data"
        password = make_data(staging, data)
        server = LocalCluster(
            cache.binaries,
            cache.runtime,
            cache.run_as,
            ClusterOptions(start_timeout=cache.timeout),
            data_source=None,
            name=staging.name,
        )
        server.claim()
        try:
            server.start_in(staging, data, password)
            prepare(server)
            server.stop(fast=True, remove=False)  # a clean shutdown: nothing to replay
            for leftover in ("postmaster.opts", "postmaster.pid"):
                with contextlib.suppress(FileNotFoundError):
                    (data / leftover).unlink()
            entry.mkdir(mode=0o700)
            try:
                data.rename(entry / "data")  # same file system: no copy at all
            except OSError:
                copy_tree(data, entry / "data")
        finally:
            server.stop()
        # Written last: its presence means the entry is complete.
        write_private_json(entry / "meta.json", {"password": password})
        return password
    finally:
        remove_tree(staging)


def create_session_db(conn: psycopg.Connection[TupleRow]) -> None:
    # "builtin": part of every private server, so `pgsandbox gc` leaves it alone.
    create_database(conn, SESSION_DB, {"kind": "session", "builtin": True})
