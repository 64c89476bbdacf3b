"""Cluster caches: data folders prepared once and copied for every new local server.

- ``InitdbCache``: a fresh ``initdb`` per set of binaries (with the built-in session database).
- ``TemplateClusterCache``: that, plus the template built from one set of schema inputs, so
  that a throw-away server starts with its template already in place.

Each entry is made in a staging server under a file lock, stopped cleanly, and moved into
the cache; ``meta.json`` (mode 0600, written last) marks it complete. A template entry also
holds a mark per project that used it (``projects/``, 0700, one empty 0600 file each).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
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
    servers are thrown away.

    Kept per project (the folder a run starts from): every ``get`` marks the entry as used
    by its project (``projects/<hash of the project's path>``, an empty file whose mtime is
    the last use). Projects with the same inputs share one entry. After a build, a project's
    entries beyond its newest ``KEEP`` (per set of binaries) lose its mark, and an entry no
    project marks any more is removed: one project's builds never push out another's.
    """

    base: InitdbCache
    digest: str
    build: Callable[[ConnInfo], object]
    project: str | None = None  # None: runs that name no project share one anonymous mark

    KEEP = 3

    @property
    def entry(self) -> Path:
        return self.base.root / "templates" / f"{self.prefix}{self.digest[:16]}"

    @property
    def prefix(self) -> str:
        """The start of the names of every entry for these binaries."""
        return f"{self.base.binaries.key}-v{CACHE_LAYOUT}-"

    @property
    def mark(self) -> str:
        return project_mark(self.project)

    def get(self) -> tuple[Path, str, bool]:
        entry = self.entry
        # Marked before the copy starts (an evicting run then sees it) and, when built now,
        # before the cache is pruned.
        got = _cached(entry, LOCK_SECONDS, self._build, lambda e: _touch_mark(e, self.mark))
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
        """Unmark this project's entries beyond its newest ``KEEP``; remove the unmarked."""
        mine = []
        for path in keep.parent.glob(self.prefix + "*"):
            used = marks(path).get(self.mark) if path.is_dir() and path != keep else None
            if used is not None:
                mine.append((used, path))
        mine.sort(reverse=True)
        for _used, old in mine[self.KEEP - 1 :]:
            with contextlib.suppress(FileNotFoundError):
                (old / MARKS / self.mark).unlink()
            if not marks(old):  # no other project uses it
                _remove_unless_building(old)


LOCK_SECONDS = 900.0  # building a template may take a while: migrations
# A cache in RAM must not grow without bound: binaries that were reinstalled (a new virtualenv)
# get new entries, and old ones are never asked for again. Least recently used go first.
KEEP_INITDB = 4
# Room for several projects' few templates each (TemplateClusterCache.KEEP per project).
KEEP_TEMPLATES = 24
# A project that has not used the cache for this long no longer shields its entries in prune.
RECENT_SECONDS = 30 * 24 * 3600.0
MARKS = "projects"  # in a template entry: one empty file per project that used it


def project_mark(project: str | None) -> str:
    """The name of a project's mark: a hash of its folder, not the path in clear."""
    return hashlib.sha256((project or "").encode()).hexdigest()[:16]


def marks(entry: Path) -> dict[str, float]:
    """The projects that marked a template entry: {mark: when it last used it}."""
    found = {}
    with contextlib.suppress(OSError):
        for mark in (entry / MARKS).iterdir():
            with contextlib.suppress(OSError):
                found[mark.name] = mark.stat().st_mtime
    return found


def _touch_mark(entry: Path, mark: str) -> None:
    folder = entry / MARKS
    with contextlib.suppress(OSError):  # a mark is a hint for clean-up: never worth failing
        folder.mkdir(mode=0o700, exist_ok=True)
        os.close(os.open(folder / mark, os.O_WRONLY | os.O_CREAT, 0o600))
        os.utime(folder / mark)


def _shielded(entries: list[Path], now: float) -> set[Path]:
    """Template entries among the newest ``KEEP`` of some project (per set of binaries)
    that used the cache within ``RECENT_SECONDS``."""
    by_owner: dict[tuple[str, str], list[tuple[float, Path]]] = {}
    for entry in entries:
        binaries = entry.name.rsplit("-", 1)[0]
        for mark, used in marks(entry).items():
            by_owner.setdefault((binaries, mark), []).append((used, entry))
    shielded: set[Path] = set()
    for owned in by_owner.values():
        owned.sort(reverse=True)
        if now - owned[0][0] <= RECENT_SECONDS:
            shielded.update(entry for _used, entry in owned[: TemplateClusterCache.KEEP])
    return shielded


def prune(root: Path) -> list[str]:
    """Remove the least recently used cache entries beyond the limits; returns their names.

    Template entries go in this order: those no project marks (made by older versions),
    then those that are not among the newest few of a recently active project, then the
    rest; least recently used first within each.
    """
    removed = []
    now = time.time()
    for kind, keep in (("initdb", KEEP_INITDB), ("templates", KEEP_TEMPLATES)):
        folder = root / kind
        if not folder.is_dir():
            continue
        entries = [p for p in folder.iterdir() if p.is_dir()]
        # initdb entries have no owners: they go by their last use alone.
        shielded = _shielded(entries, now) if kind == "templates" else set(entries)
        ranked = []
        for entry in entries:
            try:
                used = entry.stat().st_mtime
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            tier = 2 if entry in shielded else 1 if marks(entry) else 0
            ranked.append((tier, used, entry))
        ranked.sort(reverse=True)  # the ones to keep first
        for _tier, _used, old in reversed(ranked[keep:]):  # the least worth keeping first
            if _remove_unless_building(old):
                removed.append(f"{kind}/{old.name}")
    return removed


def _remove_unless_building(entry: Path) -> bool:
    """Remove a cache entry unless another process holds its lock (is building it)."""
    lock = FileLock(str(entry) + ".lock", timeout=0)
    try:
        with lock:
            remove_tree(entry)
    except Timeout:
        return False
    with contextlib.suppress(FileNotFoundError):
        Path(lock.lock_file).unlink()
    return True


def _cached(
    entry: Path,
    timeout: float,
    build: Callable[[Path], str],
    used: Callable[[Path], None] | None = None,
) -> tuple[Path, str, bool]:
    """An entry of a cluster cache: (data folder, password, built now?), built under a lock.

    ``used(entry)`` is called once the entry is complete (and before pruning, when it was
    built now).
    """
    meta = entry / "meta.json"
    if meta.exists():
        with contextlib.suppress(OSError):
            os.utime(entry)  # recently used: pruned last
        if used is not None:
            used(entry)
        return entry / "data", json.loads(meta.read_text())["password"], False
    entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with FileLock(str(entry) + ".lock", timeout=timeout):
            if meta.exists():  # built by another process while we waited
                if used is not None:
                    used(entry)
                return entry / "data", json.loads(meta.read_text())["password"], False
            password = build(entry)
            if used is not None:
                used(entry)
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
