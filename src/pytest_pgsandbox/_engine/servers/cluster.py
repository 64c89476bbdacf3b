"""A private, throw-away PostgreSQL server started from binaries on this machine.

``initdb`` runs once per set of binaries; its result is cached (cache.py) and copied for every
new server. ``postgres`` is started directly (no ``pg_ctl``) on a unix socket in a private folder,
with test-tuned settings, and a random password that is changed for every server.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from filelock import FileLock

from pytest_pgsandbox._engine.servers import janitor
from pytest_pgsandbox._engine.servers import roles
from pytest_pgsandbox._engine.servers.discovery import PgBinaries
from pytest_pgsandbox._engine.servers.options import LOG_TAIL
from pytest_pgsandbox._engine.servers.options import SOCKET_PORT
from pytest_pgsandbox._engine.servers.options import SUPERUSER
from pytest_pgsandbox._engine.servers.options import TEST_SETTINGS
from pytest_pgsandbox._engine.servers.options import ClusterOptions
from pytest_pgsandbox._engine.servers.options import DataSource
from pytest_pgsandbox._engine.servers.options import new_password
from pytest_pgsandbox._engine.servers.options import read_tail
from pytest_pgsandbox._engine.servers.options import with_preload
from pytest_pgsandbox._engine.servers.places import RunAs
from pytest_pgsandbox._engine.servers.places import copy_tree
from pytest_pgsandbox._engine.servers.places import make_server_dir
from pytest_pgsandbox._engine.servers.places import remove_tree
from pytest_pgsandbox._engine.servers.places import room_problem
from pytest_pgsandbox._engine.servers.places import spawn_args
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import ServerDied
from pytest_pgsandbox.errors import ServerStartError

IDENT_MAP = "pgsandbox"  # pg_ident.conf's map: who may be the superuser on the socket


def _hba(run_as: RunAs | None) -> str:
    """Who gets in, and how.

    Not root: the socket folder is 0700 and ours, so only we (and root) can reach it: trust.
    As root the server runs as a shared system user, whose other processes reach the socket
    too. The superuser then comes in on the socket only from root's own processes (``peer``:
    the kernel says who is calling, and the map admits root alone), with no password to check
    (``bench/socket_auth.py``: as cheap as trust, SCRAM 10-30 % dearer per connection); every
    other role needs its password. TCP always wants a password.
    """
    if run_as is None:
        local = "local all all trust\n"
    else:
        local = f"local all {SUPERUSER} peer map={IDENT_MAP}\nlocal all all scram-sha-256\n"
    return "# written by pytest-pgsandbox\n" + local + "host all all 127.0.0.1/32 scram-sha-256\n"


def _ident(run_as: RunAs | None) -> str:
    """The map ``peer`` uses: this process's own OS user (root) as the superuser, no one else."""
    lines = "# written by pytest-pgsandbox\n"
    if run_as is not None:
        import pwd

        lines += f"{IDENT_MAP} {pwd.getpwuid(os.geteuid()).pw_name} {SUPERUSER}\n"
    return lines


# Lines of a server log that say nothing about why it stopped.
_CHATTER = re.compile(
    r"LOG:  (checkpoint (starting|complete)|statement: |duration: |connection (received|"
    r"authorized|authenticated)|disconnection: )|DETAIL:  Connection matched"
)


def explaining_tail(lines: list[str], keep: int = LOG_TAIL) -> list[str]:
    """The last ``keep`` lines of a log that are not routine chatter (checkpoints,
    statements, connections), so that what ended the server shows."""
    return [line for line in lines if not _CHATTER.search(line)][-keep:]


def _death_hint(code: int, runtime: Path) -> str:
    if code == -signal.SIGKILL:
        return (
            "  SIGKILL leaves nothing in the server's log: something on this machine killed it "
            "(the OOM killer - see dmesg -, a CI timeout, a kill -9)."
        )
    room = room_problem(runtime)
    return (
        f"  The server log above says why it stopped.{' ' + room if room else ''} If "
        "something on this machine kills processes (OOM killer, a CI timeout), look there."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class LocalCluster:
    """A PostgreSQL server of our own: its folder, process, socket and password."""

    binaries: PgBinaries
    runtime: Path
    run_as: RunAs | None
    options: ClusterOptions
    data_source: DataSource | None
    name: str = field(default_factory=lambda: secrets.token_hex(4))
    admin: ConnInfo = field(init=False)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    startup_seconds: float = field(default=0.0, init=False)
    initdb_cached: bool = field(default=True, init=False)
    _lock: FileLock | None = field(default=None, init=False)
    _removed: bool = field(default=False, init=False)
    _died: ServerDied | None = field(default=None, init=False, repr=False)

    owns_cluster = True

    @property
    def folder(self) -> Path:
        return self.runtime / self.name

    @property
    def log_path(self) -> Path:
        return self.runtime / f"{self.name}.log"

    @property
    def version(self) -> str:
        return self.binaries.version

    @property
    def outlives_session(self) -> bool:
        return self.options.outlives_session

    def describe(self) -> str:
        where = f"socket {self.folder}"
        if self.options.tcp:
            where += f", tcp 127.0.0.1:{self.options.port}"
        return f"{self.binaries.describe()}, local server ({where})"

    def start(self) -> None:
        """Copy the cached cluster into a new folder and start it; the deadline is absolute."""
        assert self.data_source is not None
        began = time.monotonic()
        self.claim()
        try:
            source, password, built = self.data_source.get()
            self.initdb_cached = not built
            folder = make_server_dir(self.folder, self.run_as)
            copy_tree(source, folder / "data", where=self.runtime)
            self.start_in(folder, folder / "data", password)
            self._rotate_password()
        except OSError as exc:
            self.stop()
            if exc.errno != errno.ENOSPC:
                raise
            room = room_problem(self.runtime) or f"The file system of {self.runtime} is full."
            raise ServerStartError(
                f"could not prepare a local server in {self.folder}: {exc.strerror}.\n  {room}"
            ) from None
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def claim(self) -> None:
        self._lock = janitor.claim(self.runtime, self.name, self.options.outlives_session)

    def start_in(self, folder: Path, data: Path, password: str) -> None:
        (data / "pg_hba.conf").write_text(_hba(self.run_as))
        (data / "pg_ident.conf").write_text(_ident(self.run_as))
        user_port = self.options.port
        tcp = self.options.tcp or user_port != 0
        if tcp and user_port and not _port_free(user_port):
            raise ServerStartError(
                f"port {user_port} on 127.0.0.1 is already in use by another program, so a "
                f"local PostgreSQL server cannot listen there. Choose another --pg-port, or "
                "--pg-port 0 to let pgsandbox pick a free one."
            )
        attempts = 3 if tcp and not user_port else 1
        for attempt in range(attempts):
            port = (user_port or _free_port()) if tcp else SOCKET_PORT
            self.options.tcp = tcp
            self.options.port = port if tcp else 0
            host = "127.0.0.1" if tcp else str(folder)  # with TCP on, every URL uses it
            self.admin = ConnInfo(host=host, port=port, user=SUPERUSER, password=password)
            try:
                self._spawn(folder, data, port, tcp)
                return
            except ServerStartError:
                in_use = any("Address already in use" in ln for ln in read_tail(self.log_path))
                if not (in_use and attempt + 1 < attempts):
                    raise

    def _spawn(self, folder: Path, data: Path, port: int, tcp: bool) -> None:
        settings = dict(TEST_SETTINGS)
        settings.update(
            {
                "listen_addresses": "127.0.0.1" if tcp else "",
                "port": str(port),
                "unix_socket_directories": str(folder),
                "unix_socket_permissions": "0700",
            }
        )
        settings.update(dict(self.options.conf))
        argv = [str(self.binaries.exe("postgres")), "-D", str(data)]
        for key, value in with_preload(settings).items():
            argv += ["-c", f"{key}={value}"]
        deadline = time.monotonic() + self.options.start_timeout
        # Ours alone: statements the server logs may hold data that is not for others.
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **spawn_args(self.run_as),
            )
        self._record(ready=False)
        self._wait_ready(data, deadline)

    def _wait_ready(self, data: Path, deadline: float) -> None:
        pidfile = data / "postmaster.pid"
        delay = 0.002
        assert self.process is not None
        while True:
            code = self.process.poll()
            if code is not None:
                hint = ""
                if any("configuration" in ln or "parameter" in ln for ln in self.log_tail()):
                    hint = "  check the server settings given with --pg-conf / pg_conf."
                raise ServerStartError.with_log(
                    f"PostgreSQL ({self.binaries.describe()}) exited with code {code} while "
                    f"starting in {data}.",
                    self.log_tail(),
                    hint,
                )
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return
            if time.monotonic() > deadline:
                self.process.kill()
                raise ServerStartError.with_log(
                    f"PostgreSQL ({self.binaries.describe()}) did not become ready within "
                    f"{self.options.start_timeout:g} s. Raise --pg-start-timeout if this "
                    "machine is very slow.",
                    self.log_tail(),
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    def _rotate_password(self) -> None:
        """Give this server a password of its own (the cached one is shared by copies)."""
        password = new_password()
        with connect(self.admin, timeout=self.options.start_timeout) as conn:
            roles.set_password(conn, SUPERUSER, password)
        self.admin = ConnInfo(
            host=self.admin.host, port=self.admin.port, user=SUPERUSER, password=password
        )
        self._record()

    def _record(self, *, ready: bool = True) -> None:
        pid = self.process.pid if self.process else 0
        janitor.record(
            self.runtime, self.name, pid, self.admin, self.binaries, self.options, ready=ready
        )

    def log_tail(self, lines: int = LOG_TAIL) -> list[str]:
        return read_tail(self.log_path, lines)

    def check_alive(self, recheck: bool = False) -> None:
        """Raise ServerDied (with what the log says about it) if the process has exited."""
        if self._died is not None:
            raise self._died.with_traceback(None)  # not a traceback that grows
        if self.process is None:
            return
        code = self.process.poll()
        if code is None:
            return
        how = f"exited with code {code}"
        if code < 0:
            with contextlib.suppress(ValueError):
                how = f"was killed by signal {-code} ({signal.Signals(-code).name})"
        self._died = ServerDied.with_log(
            f"the local PostgreSQL server (pid {self.process.pid}) {how} while tests were "
            "running; the tests that need it cannot run.",
            explaining_tail(read_tail(self.log_path, 20 * LOG_TAIL)),
            _death_hint(code, self.runtime),
        )
        raise self._died

    def stop(self, *, fast: bool = False, remove: bool = True) -> None:
        """Stop the server (immediate shutdown unless ``fast``); then remove its files."""
        if self.process is not None and self.process.poll() is None:
            sig = signal.SIGINT if fast else signal.SIGQUIT
            janitor.stop_process(self.process.pid, sig, wait=self.process.wait)
        if remove and not self._removed:
            self._removed = True
            janitor.release_shared_memory(self.folder / "data")
            remove_tree(self.folder)
            with contextlib.suppress(FileNotFoundError):
                self.log_path.unlink()
            janitor.release(self.runtime, self.name, self._lock)
