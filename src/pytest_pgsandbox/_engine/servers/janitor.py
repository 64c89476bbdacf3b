"""Records of the servers we start, and reaping what a killed run left behind.

Each local server ``NAME`` has, in the runtime folder: its folder ``NAME/`` (data and socket),
``NAME.log``, ``NAME.json`` (owner, process, how to connect; mode 0600) and ``NAME.lock``,
held by the owning process for as long as it runs. A lock that can be taken means the owner
is gone: the server is stopped and its files are removed. Servers started to be reused
(``pgsandbox start``) are only reaped once their process has died.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from filelock import FileLock
from filelock import Timeout

from pytest_pgsandbox._engine.servers.discovery import PgBinaries
from pytest_pgsandbox._engine.servers.places import remove_tree
from pytest_pgsandbox._engine.servers.places import write_private_json
from pytest_pgsandbox._engine.urls import ConnInfo

if TYPE_CHECKING:
    from pytest_pgsandbox._engine.servers.options import ClusterOptions

STALE_SECONDS = 3600.0
# A lock file without a record is a server that never finished starting, or one that is
# starting right now: only the first kind is old.
UNRECORDED_GRACE_SECONDS = 300.0
RUN_LOCK_GRACE_SECONDS = 5.0  # a run's workers take it within moments of its creation


def claim(runtime: Path, name: str, outlives_owner: bool) -> FileLock | None:
    """Hold ``NAME.lock`` for the life of this process (not for servers that outlive it)."""
    if outlives_owner:
        return None
    lock = FileLock(str(runtime / f"{name}.lock"), timeout=0)
    lock.acquire()
    return lock


def record(
    runtime: Path,
    name: str,
    pid: int,
    admin: ConnInfo,
    binaries: PgBinaries,
    options: ClusterOptions,
    *,
    ready: bool = True,
) -> None:
    """Write (or rewrite) the server's record. It is written once the process is spawned,
    so that it is reaped if we die, and again with ``ready`` once others may use it."""
    path = runtime / f"{name}.json"
    data = {
        "name": name,
        "ready": ready,
        "owner_pid": options.owner_pid or os.getpid(),
        "postmaster_pid": pid,
        "reusable": options.reusable,
        "run": options.run,
        "project": options.project,
        "by": options.by,
        "tcp": options.tcp,
        "conf": [list(item) for item in options.conf],
        "host": admin.host,
        "port": admin.port,
        "user": admin.user,
        "password": admin.password,
        "bin_dir": str(binaries.bin_dir),
        "bin_key": binaries.key,
        "version": binaries.version,
        "source": binaries.source,
        "created": time.time(),
    }
    write_private_json(path, data)


def release(runtime: Path, name: str, lock: FileLock | None) -> None:
    with contextlib.suppress(FileNotFoundError):
        (runtime / f"{name}.json").unlink()
    if lock is not None:
        lock.release()
    with contextlib.suppress(FileNotFoundError):
        (runtime / f"{name}.lock").unlink()


@dataclass(frozen=True)
class ServerRecord:
    name: str
    data: dict[str, Any]
    folder: Path

    @property
    def pid(self) -> int:
        return int(self.data.get("postmaster_pid") or 0)

    @property
    def reusable(self) -> bool:
        return bool(self.data.get("reusable"))

    @property
    def ready(self) -> bool:
        """Started, and its password is the one recorded (others may connect)."""
        return bool(self.data.get("ready", True))

    @property
    def project(self) -> str | None:
        """The project a reusable server was started for (None: an older record)."""
        project = self.data.get("project")
        return str(project) if project else None

    def describe_reusable(self) -> str:
        """How messages name a reusable server: its name, project and who started it."""
        by = self.data.get("by") or "a test run"
        return f"reusable server {self.name} (started by {by} for {self.project or '?'})"

    @property
    def run(self) -> str | None:
        run = self.data.get("run")
        return str(run) if run else None

    def admin(self) -> ConnInfo:
        return ConnInfo(
            host=self.data["host"],
            port=int(self.data["port"]),
            user=self.data["user"],
            password=self.data.get("password"),
        )


def records(runtime: Path) -> list[ServerRecord]:
    out = []
    for path in sorted(runtime.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        out.append(ServerRecord(path.stem, data, runtime / path.stem))
    return out


def cmdline(pid: int) -> str | None:
    """The command line of a running process, or None if there is no such process."""
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.parent.parent.is_dir() and sys.platform.startswith("linux"):
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
    try:
        out = subprocess.run(
            ["ps", "-p", str(pid), "-o", "command="],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def is_our_postmaster(pid: int, folder: Path) -> bool:
    line = cmdline(pid)
    return bool(pid) and line is not None and str(folder / "data") in line


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def stop_process(
    pid: int, sig: int, wait: Callable[[float], object] | None = None, timeout: float = 10.0
) -> None:
    """Send ``sig``; escalate to SIGKILL if the process is still there after ``timeout``."""
    for current in (sig, signal.SIGKILL):
        try:
            os.kill(pid, current)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        if wait is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                wait(timeout)
                return
            continue
        while time.monotonic() < deadline:
            if _gone(pid):
                return
            time.sleep(0.01)


def postmaster_pid(data: Path) -> int | None:
    """The pid in ``postmaster.pid`` of a data folder (None if there is none)."""
    try:
        first = (data / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def release_shared_memory(data: Path) -> None:
    """Remove the System V segment of a postmaster that died without cleaning up.

    A clean shutdown removes ``postmaster.pid``; if it is still there once the process is
    gone (SIGKILL, OOM killer), its line 7 names the segment, which would outlive the folder.
    """
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return
    fields = lines[6].split() if len(lines) > 6 else []
    if len(fields) == 2 and fields[1].isdigit() and shutil.which("ipcrm"):
        subprocess.run(["ipcrm", "-m", fields[1]], capture_output=True, timeout=10, check=False)


def is_alive(rec: ServerRecord) -> bool:
    return is_our_postmaster(rec.pid, rec.folder)


def owner_alive(runtime: Path, rec: ServerRecord) -> bool:
    """True while the process that started a (non-reusable) server still runs."""
    if rec.data.get("owner_pid") == os.getpid():
        return True
    lock = FileLock(str(runtime / f"{rec.name}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def reap_one(runtime: Path, rec: ServerRecord) -> None:
    if is_our_postmaster(rec.pid, rec.folder):
        stop_process(rec.pid, signal.SIGQUIT)
    release_shared_memory(rec.folder / "data")
    remove_tree(rec.folder)
    for suffix in (".log", ".json", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            (runtime / f"{rec.name}{suffix}").unlink()
    if rec.reusable:
        remove_free_lock(reuse_lock(runtime, str(rec.data.get("bin_key"))))


def reuse_lock(runtime: Path, bin_key: str) -> Path:
    """The lock a reusable server for these binaries is started under."""
    return runtime / f"reuse-{bin_key}.lock"


def remove_free_lock(path: Path) -> bool:
    """Remove a lock file that nobody holds now (one that is held stays)."""
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    finally:
        lock.release()
    return True


def stop_run(runtime: Path, run: str) -> list[str]:
    """Stop the servers that the xdist workers of ``run`` shared."""
    stopped = []
    for rec in records(runtime):
        if rec.run == run:
            reap_one(runtime, rec)
            stopped.append(rec.name)
    with contextlib.suppress(FileNotFoundError):
        (runtime / f"run-{run}.lock").unlink()
    return stopped


def reap(runtime: Path) -> list[str]:
    """Reap servers whose owner has died, and half-written folders. Returns what was reaped."""
    reaped = []
    for rec in records(runtime):
        if rec.run is not None:  # shared by a run's xdist workers; its controller owns it
            owner = int(rec.data.get("owner_pid") or 0)
            if cmdline(owner) is None or not is_alive(rec):
                reap_one(runtime, rec)
                reaped.append(f"server {rec.name} (its test run, pid {owner}, has ended)")
            continue
        if rec.reusable:
            if not is_alive(rec):
                reap_one(runtime, rec)
                reaped.append(f"server {rec.name} (reusable, no longer running)")
            continue
        if not owner_alive(runtime, rec):
            reap_one(runtime, rec)
            reaped.append(
                f"server {rec.name} (its test run, pid {rec.data.get('owner_pid')}, has ended)"
            )
    known = {rec.name for rec in records(runtime)}
    now = time.time()
    for lock_path in runtime.glob("*.lock"):
        name = lock_path.stem
        if name.startswith("run-"):  # an xdist run's start-up lock
            # Left by a run that was killed: nobody holds it, and its run has no server.
            run = name.removeprefix("run-")
            with contextlib.suppress(OSError):
                old = now - lock_path.stat().st_mtime > RUN_LOCK_GRACE_SECONDS
                if old and not any(r.run == run for r in records(runtime)):
                    remove_free_lock(lock_path)
            continue
        if name.startswith("reuse-"):  # taken while a reusable server starts; kept
            continue
        try:
            young = now - lock_path.stat().st_mtime < UNRECORDED_GRACE_SECONDS
        except OSError:
            continue
        if name in known or young:
            continue
        rec = ServerRecord(name, {}, runtime / name)
        if not owner_alive(runtime, rec):  # killed before its record was written
            reap_one(runtime, rec)
            reaped.append(f"server folder {name} (never finished starting)")
    for path in runtime.iterdir():
        if path.name == "cache":
            continue
        if path.name.startswith(".trash-"):
            pass  # a folder whose removal was interrupted
        elif path.name.startswith("run-") and path.suffix == ".docker":
            # An xdist run's note that it shares a container: its controller was killed
            # (the container itself goes by its labels).
            with contextlib.suppress(OSError):
                if now - path.lstat().st_mtime > STALE_SECONDS:
                    path.unlink()
            continue
        elif path.name.startswith(("staging-", "bin-staging-")):
            with contextlib.suppress(OSError):
                if now - path.lstat().st_mtime < STALE_SECONDS:
                    continue  # may still be in use by a run that is initialising
        else:
            continue
        shutil.rmtree(path, ignore_errors=True)
        reaped.append(f"folder {path.name}")
    return reaped
