"""Who runs the server, and the folders we own: runtime (servers, sockets) and cache.

PostgreSQL refuses to run as root. When we are root (containers, CI), initdb and postgres run
as the unprivileged ``nobody`` user: their folders are created for that user by us, and if that
user cannot reach the binaries (a virtualenv under ``/root``, say), the binaries are copied
into a folder it can reach. We never change the modes of folders we did not create and never
create system users.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from pytest_pgsandbox._engine.servers.discovery import PgBinaries
from pytest_pgsandbox._engine.servers.discovery import install_root
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.errors import ServerStartError

SERVER_USER = "nobody"


class SpawnArgs(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]
    cwd: str


@dataclass(frozen=True)
class RunAs:
    """An unprivileged user to run initdb and postgres as (only when we are root)."""

    name: str
    uid: int
    gid: int


def spawn_args(run_as: RunAs | None) -> SpawnArgs:
    """``subprocess`` keyword arguments that run a program as ``run_as`` (if any)."""
    if run_as is None:
        return {}
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": [], "cwd": "/"}


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def server_user() -> RunAs | None:
    """None when we are not root; else the unprivileged user the server runs as."""
    if not is_root():
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PgSandboxError(
            "running as root, and PostgreSQL refuses to run as root; pgsandbox runs the "
            f"server as the unprivileged user {SERVER_USER!r}, but this system has no such "
            "user. Run the tests as a non-root user, or add an unprivileged user named "
            f"{SERVER_USER!r} to the system image."
        ) from None
    return RunAs(SERVER_USER, entry.pw_uid, entry.pw_gid)


def _private_dir(path: Path, mode: int) -> Path:
    """Create ``path`` (ours alone) or check that an existing one is ours and not open."""
    try:
        path.mkdir(mode=mode)
        path.chmod(mode)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise PgSandboxError(
                f"{path} exists but is not a folder owned by this user; pgsandbox will not "
                "use it. Remove it, or choose another --pg-runtime-dir."
            ) from None
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PgSandboxError(  # noqa: B904 - not caused by the FileExistsError
                f"{path} is writable by other users; pgsandbox will not use it. "
                "Remove it (it is recreated), or choose another --pg-runtime-dir."
            )
    return path


RAM_DIR = "/dev/shm"  # noqa: S108 - only private 0700/0711 folders are created in it
RAM_MIN_FREE = 1 << 30  # leave the RAM file system alone when it has less than 1 GiB free


def ram_dir() -> str | None:
    """A RAM file system with room, if this machine has one (Linux: /dev/shm)."""
    try:
        st = os.statvfs(RAM_DIR)
    except (OSError, AttributeError):
        return None
    if st.f_bavail * st.f_frsize < RAM_MIN_FREE or not os.access(RAM_DIR, os.W_OK):
        return None
    return RAM_DIR


def in_ram(path: Path) -> bool:
    """Whether ``path`` lives on a RAM file system (tmpfs/ramfs; Linux only, else False)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    target = str(path.resolve())
    best, kind = "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind in ("tmpfs", "ramfs")


def runtime_dir(setting: Path | None = None, use_ram: bool = True) -> Path:
    """Where servers live: short (unix socket paths are limited to ~107 bytes) and private.

    On a RAM file system when there is one with room (copying a cluster and creating
    databases is several times faster there), else in the temporary folder. As root it is
    traversable (not listable) by the server user: mode 0711.
    """
    mode = 0o711 if is_root() else 0o700
    if setting is not None:
        setting.parent.mkdir(parents=True, exist_ok=True)
        return _private_dir(setting, mode)
    tmp = (ram_dir() if use_ram else None) or tempfile.gettempdir()
    if len(tmp) > 40 and os.path.isdir("/tmp"):  # noqa: S108 - macOS' TMPDIR is too long
        tmp = "/tmp"  # noqa: S108 - a private 0700/0711 folder is created below it
    uid = os.geteuid() if hasattr(os, "geteuid") else 0
    return _private_dir(Path(tmp) / f"pgsandbox-{uid}", mode)


def cache_dir(setting: Path | None, runtime: Path) -> Path:
    """Where initialised clusters are cached.

    Beside the servers when those live in RAM (a copy from RAM to RAM is the fastest start;
    the cache is rebuilt once after a reboot), else in the user's cache folder.
    """
    if setting is not None:
        base = setting
    elif ram_dir() is not None and str(runtime).startswith(RAM_DIR):
        base = runtime / "cache"
    elif os.environ.get("XDG_CACHE_HOME"):
        base = Path(os.environ["XDG_CACHE_HOME"]) / "pgsandbox"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches" / "pgsandbox"
    else:
        base = Path.home() / ".cache" / "pgsandbox"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base


def check_reachable(folder: Path, run_as: RunAs | None) -> None:
    """Raise if ``run_as`` cannot get to ``folder`` (every parent needs the x bit for it)."""
    if run_as is None:
        return
    for parent in (folder, *folder.parents):
        st = parent.stat()
        if st.st_uid == run_as.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == run_as.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            raise PgSandboxError(
                f"running as root, local servers run as {run_as.name!r}, which cannot get "
                f"into {parent} (mode {stat.S_IMODE(st.st_mode):o}), so it cannot reach the "
                f"server folder {folder}. Choose a --pg-runtime-dir below a folder that "
                "everyone may enter, such as /tmp or /dev/shm."
            )


def write_private_json(path: Path, data: object) -> None:
    """Write ``data`` as JSON readable by us alone, atomically (readers never see half)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def make_server_dir(path: Path, run_as: RunAs | None) -> Path:
    path.mkdir(mode=0o700)
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)
    return path


def copy_tree(src: Path, dst: Path, where: Path | None = None) -> None:
    """Copy a data directory keeping owners and modes (``cp -a`` is kernel-bound and fast).

    A copy that fails (most often: no room) raises ServerStartError saying where (``where``,
    else the folder of ``dst``), how much is needed and which setting moves it; the
    half-made copy is removed.
    """
    try:
        if shutil.which("cp") and sys.platform != "win32":
            subprocess.run(
                ["cp", "-a", str(src), str(dst)], check=True, capture_output=True, timeout=300
            )
        else:
            shutil.copytree(src, dst, symlinks=True)
    except subprocess.CalledProcessError as exc:
        said = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        remove_tree(dst)
        what = said[0] if said else f"cp exited with {exc.returncode}"
        raise copy_failed(src, dst, what, where or dst.parent) from None
    except OSError as exc:
        remove_tree(dst)
        raise copy_failed(src, dst, str(exc), where or dst.parent) from None


def tree_size(path: Path) -> int:
    """Bytes in the files below ``path`` (as far as they can be read)."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def free_bytes(path: Path) -> int | None:
    """Bytes free for us on the file system of ``path`` (None if unknown)."""
    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(candidate)
        except (OSError, AttributeError):
            continue
        return st.f_bavail * st.f_frsize
    return None


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB" if n >= 1 << 20 else f"{n / 1024:.0f} kB"


def room_problem(folder: Path, needed: int = 0) -> str:
    """If the file system of ``folder`` is (nearly) full: a sentence that says so, how much
    is needed and which setting moves the servers; else ""."""
    free = free_bytes(folder)
    if free is None or free >= max(needed, 16 << 20):
        return ""
    need = f"{_mb(needed)} are needed and " if needed else ""
    return (
        f"The file system of {folder} is full: {need}{_mb(free)} are free. Free space there, "
        "or move the servers elsewhere with --pg-runtime-dir / PGSANDBOX_RUNTIME_DIR / "
        "pg_runtime_dir (and the cluster cache with --pg-cache-dir)."
    )


def copy_failed(src: Path, dst: Path, said: str, where: Path) -> ServerStartError:
    needed = tree_size(src)
    room = room_problem(where, needed)
    if not room and "No space left" in said:  # the copy itself filled it up: free again now
        room = (
            f"The file system of {where} has no room for {_mb(needed)}. Free space there, "
            "or move the servers with --pg-runtime-dir / PGSANDBOX_RUNTIME_DIR."
        )
    return ServerStartError(
        f"could not copy the server's files ({_mb(needed)}) from {src} to {dst}: {said}."
        + (f"\n  {room}" if room else "")
    )


def remove_tree(path: Path) -> None:
    """Rename, then delete: a half-deleted folder never looks like a live one."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    try:
        path.rename(trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


def runs_as(binaries: PgBinaries, run_as: RunAs | None) -> bool:
    """Can ``run_as`` start these binaries? (Tried for real: permissions are subtle.)"""
    if run_as is None:
        return True
    try:
        subprocess.run(
            [str(binaries.exe("postgres")), "--version"],
            capture_output=True,
            timeout=20,
            check=True,
            **spawn_args(run_as),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def reachable_binaries(binaries: PgBinaries, run_as: RunAs | None, runtime: Path) -> PgBinaries:
    """Binaries that ``run_as`` can execute: these, or a copy in a folder it can reach.

    The copy lives under the runtime folder (created by us, mode 0711) and is made once per
    set of binaries; the user's own folders are never touched.
    """
    if runs_as(binaries, run_as):
        return binaries
    assert run_as is not None  # runs_as() is True for None
    base, entries = install_root(binaries)
    target = runtime / f"bin-{binaries.key}"
    rel_bin = os.path.relpath(binaries.bin_dir.resolve(), base)
    copied = PgBinaries(target / rel_bin, binaries.version, binaries.source + ", copied")
    if not (target / ".complete").exists():
        staging = Path(tempfile.mkdtemp(prefix="bin-staging-", dir=runtime))
        staging.chmod(0o755)
        for entry in entries:
            (staging / entry).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            shutil.copytree(base / entry, staging / entry, symlinks=True)
        for folder, dirs, _files in os.walk(staging):
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o755)  # noqa: S103 - our copy, read-only use
        (staging / ".complete").touch()
        try:
            staging.rename(target)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(staging, ignore_errors=True)
    if not runs_as(copied, run_as):
        raise ServerStartError(
            f"running as root, the server must run as {run_as.name!r}, which cannot execute "
            f"the PostgreSQL binaries in {binaries.bin_dir} nor a copy of them in {target}. "
            "Install PostgreSQL in a system folder (apt-get install postgresql), or run the "
            "tests as a non-root user."
        )
    return copied
