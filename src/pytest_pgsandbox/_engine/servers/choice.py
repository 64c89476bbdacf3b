"""Where PostgreSQL comes from, behind one small interface.

- ``LocalCluster`` (cluster.py): a private server of our own.
- ``ExternalServer``: an existing server from a URL (or libpq's PG* variables), or a reusable
  local server started earlier with ``pgsandbox start``. We only create and drop databases
  there that we labelled.

``open_server`` picks one from the settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import psycopg
from filelock import FileLock
from filelock import Timeout

from pytest_pgsandbox._engine.servers import external
from pytest_pgsandbox._engine.servers import janitor
from pytest_pgsandbox._engine.servers import places
from pytest_pgsandbox._engine.servers import roles
from pytest_pgsandbox._engine.servers.base import PgServer
from pytest_pgsandbox._engine.servers.base import version_text
from pytest_pgsandbox._engine.servers.cache import InitdbCache
from pytest_pgsandbox._engine.servers.cache import TemplateClusterCache
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.servers.cluster import explaining_tail
from pytest_pgsandbox._engine.servers.discovery import PgBinaries
from pytest_pgsandbox._engine.servers.discovery import find_binaries
from pytest_pgsandbox._engine.servers.options import LOG_TAIL
from pytest_pgsandbox._engine.servers.options import ClusterOptions
from pytest_pgsandbox._engine.servers.options import read_tail
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import MalformedConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox.errors import BinariesNotFound
from pytest_pgsandbox.errors import ServerDied
from pytest_pgsandbox.errors import ServerStartError
from pytest_pgsandbox.errors import ServerUnreachable
from pytest_pgsandbox.settings import Settings


@dataclass
class ExternalServer:
    """A server we did not start: we connect, and never stop it."""

    admin: ConnInfo
    source: str
    timeout: float = 60.0
    guard: bool = False  # refuse a URL that names an application's database
    startup_seconds: float = field(default=0.0, init=False)
    server_version: int = field(default=0, init=False)
    may_create_databases: bool = field(default=True, init=False)  # the URL's role
    # Set when it is a local server pgsandbox started (reusable, or shared by the workers
    # of an xdist run): its folder, so that copies are made the way its storage wants.
    folder: Path | None = None
    # Set when it is a reusable server this run attached to: which, for the report.
    attached: str = ""
    _died: ServerDied | None = field(default=None, init=False, repr=False)
    _looked_at: float = field(default=-1.0, init=False, repr=False)

    owns_cluster = False
    outlives_session = True

    @property
    def version(self) -> str:
        return version_text(self.server_version)

    def describe(self) -> str:
        return f"PostgreSQL {self.version} at {mask(self.admin.url())} ({self.source})"

    def start(self) -> None:
        began = time.monotonic()
        try:
            with connect(self.admin, timeout=self.timeout) as conn:
                self.server_version = conn.info.server_version
                self.may_create_databases = roles.rights(conn).may_create_databases
                if self.guard:
                    external.check_database(conn, self.admin)
        except psycopg.Error as exc:
            waited = time.monotonic() - began
            how = (
                f"gave up after {self.timeout:g} s"
                if waited >= self.timeout - 0.5
                else f"it failed after {waited:.2f} s"
            )
            raise ServerUnreachable(
                f"could not connect to the PostgreSQL server at {mask(self.admin.url())} "
                f"({self.source}); {how}.\n"
                f"  The driver said: {mask(str(exc).strip())}\n"
                "  Check that the server is running and that host, port, user, password and "
                "database in the URL are right, or unset --pg-url / PGSANDBOX_URL / pg_url "
                "to let pgsandbox start a private local server."
            ) from None
        self.startup_seconds = time.monotonic() - began

    def check_alive(self, recheck: bool = False) -> None:
        """For a local server of ours that another process started (an xdist worker of this
        run, or a reusable one): raise ServerDied if its postmaster is gone.

        Looks at most once a second unless ``recheck`` (after an error): each look reads
        two files, and it is called before every step of every test."""
        if self._died is not None:
            raise self._died.with_traceback(None)  # not a traceback that grows
        if self.folder is None:
            return
        now = time.monotonic()
        if not recheck and 0 <= now - self._looked_at < 1.0:
            return
        self._looked_at = now
        pid = janitor.postmaster_pid(self.folder / "data")
        if pid is None or janitor.is_our_postmaster(pid, self.folder):
            return
        log = self.folder.with_name(f"{self.folder.name}.log")
        self._died = ServerDied.with_log(
            f"the local PostgreSQL server in {self.folder} ({self.source}, pid {pid}) stopped "
            "while tests were running; the tests that need it cannot run.",
            explaining_tail(read_tail(log, 20 * LOG_TAIL)),
            "  If something on this machine kills processes (OOM killer, a CI timeout), "
            "look there.",
        )
        raise self._died

    def stop(self) -> None:
        return None


def _matches(rec: janitor.ServerRecord, binaries: PgBinaries, settings: Settings) -> bool:
    """Was this server started with these binaries and these server options?"""
    data = rec.data
    return (
        data.get("bin_key") == binaries.key
        and bool(data.get("tcp")) == bool(settings.tcp or settings.port)
        and (not settings.port or data.get("port") == settings.port)
        and data.get("conf", []) == [list(item) for item in settings.server_conf]
    )


def _attach(
    binaries: PgBinaries,
    settings: Settings,
    run: str | None = None,
    project: str | None = None,
) -> ExternalServer | None:
    """A running server to share: the reusable one of ``project`` (``run`` None; never one
    started for another project) or the one shared by the run ``run``."""
    timeout = settings.start_timeout
    runtime = places.runtime_dir(settings.runtime_dir, settings.tmpfs)
    for rec in janitor.records(runtime):
        if run is not None:
            wanted = rec.run == run
        else:
            wanted = rec.reusable and project is not None and rec.project == project
        if not (wanted and rec.ready):  # published before it is ready: not yet
            continue
        if _matches(rec, binaries, settings) and janitor.is_alive(rec):
            what = (
                f"reusable server {rec.name}" if run is None else f"server {rec.name} of this run"
            )
            server = ExternalServer(rec.admin(), what, timeout, folder=rec.folder)
            if run is None:
                server.attached = rec.describe_reusable()
            try:
                server.start()
            except ServerUnreachable:
                continue
            return server
    return None


@dataclass(frozen=True)
class Prebuild:
    """How to put the template into a new local server's data before it starts."""

    digest: Callable[[int], str]  # PostgreSQL major version -> fingerprint of the inputs
    build: Callable[[ConnInfo, int], object]  # builds it on a server (admin info, major)


def local_cluster(
    settings: Settings,
    binaries: PgBinaries | None = None,
    reusable: bool = False,
    run: str | None = None,
    owner_pid: int | None = None,
    prebuild: Prebuild | None = None,
    project: str | None = None,
    by: str = "a test run",
) -> LocalCluster:
    """A LocalCluster (not started yet), with its binaries made reachable by the server user.

    ``project``: the folder the run starts from. The template cache keeps its entries per
    project; the server itself records it only when reusable (only that project attaches).
    """
    binaries = binaries or find_binaries(settings.bin_dir)
    run_as = places.server_user()
    runtime = places.runtime_dir(settings.runtime_dir, settings.tmpfs)
    places.check_reachable(runtime, run_as)
    janitor.reap(runtime)
    binaries = places.reachable_binaries(binaries, run_as, runtime)
    initdb = InitdbCache(
        places.cache_dir(settings.cache_dir, runtime),
        binaries,
        run_as,
        runtime,
        settings.start_timeout,
    )
    cache: InitdbCache | TemplateClusterCache = initdb
    if prebuild is not None:
        major = binaries.major
        cache = TemplateClusterCache(
            initdb,
            prebuild.digest(major),
            lambda admin: prebuild.build(admin, major),
            project=project,  # its entries are kept per project
        )
    options = ClusterOptions(
        tcp=settings.tcp or settings.port != 0,
        port=settings.port,
        conf=settings.server_conf,
        start_timeout=settings.start_timeout,
        reusable=reusable,
        run=run,
        owner_pid=owner_pid,
        project=project if reusable else None,
        by=by if reusable else "",
    )
    return LocalCluster(binaries, runtime, run_as, options, cache)


def reusable_server(
    settings: Settings,
    binaries: PgBinaries,
    prebuild: Prebuild | None = None,
    project: str | None = None,
    by: str = "a test run",
) -> PgServer:
    """The reusable local server of ``project`` for these binaries: one that runs, or one
    started now (for that project: other projects' runs do not attach to it).

    Started under a lock (one per set of binaries and runtime folder), so that runs and
    xdist workers that start together share one server; the others attach once its record
    says it is ready.
    """
    attached = _attach(binaries, settings, project=project)
    if attached is not None:
        return attached
    from pytest_pgsandbox._engine.servers.cache import LOCK_SECONDS

    runtime = places.runtime_dir(settings.runtime_dir, settings.tmpfs)
    wait = max(settings.start_timeout, LOCK_SECONDS)  # the holder may be building a template
    try:
        with FileLock(str(janitor.reuse_lock(runtime, binaries.key)), timeout=wait):
            attached = _attach(binaries, settings, project=project)
            if attached is not None:
                return attached
            # Under the lock, a reusable server that never became ready lost its starter.
            for rec in janitor.records(runtime):
                if rec.reusable and not rec.ready:
                    janitor.reap_one(runtime, rec)
            cluster = local_cluster(
                settings, binaries, reusable=True, prebuild=prebuild, project=project, by=by
            )
            cluster.start()
            return cluster
    except Timeout:
        raise ServerStartError(
            f"waited {wait:.0f} s for another test run to start the reusable server in "
            f"{runtime}. If no other run is active, remove {runtime}/reuse-*.lock."
        ) from None


def named_server(settings: Settings) -> ExternalServer:
    """The running reusable server the attach setting names, whoever it was started for."""
    runtime = places.runtime_dir(settings.runtime_dir, settings.tmpfs)
    for rec in janitor.records(runtime):
        if rec.name == settings.attach and rec.reusable and rec.ready and janitor.is_alive(rec):
            server = ExternalServer(
                rec.admin(),
                f"reusable server {rec.name}",
                settings.start_timeout,
                folder=rec.folder,
            )
            server.attached = f"{rec.describe_reusable()}, named by attach"
            server.start()
            return server
    raise ServerUnreachable(
        f"no reusable server named {settings.attach!r} is running in {runtime} (attach from "
        f"{settings.source('attach')}). pgsandbox status lists the running ones; start one "
        "with pgsandbox start, or unset attach."
    )


def external_url(settings: Settings) -> tuple[ConnInfo, str]:
    """The existing server's connection info, and where it came from."""
    if settings.url:
        return _parsed(settings.url, f"url from {settings.source('url')}")
    if settings.url_command:
        source = f"url_command from {settings.source('url_command')}"
        url = external.url_from_command(settings.url_command, settings.start_timeout, source)
        return _parsed(url, source)
    return _parsed("", "libpq PG* variables")


def _parsed(conninfo: str, source: str) -> tuple[ConnInfo, str]:
    try:
        return ConnInfo.from_conninfo(conninfo), source
    except MalformedConnInfo as exc:
        raise ServerUnreachable(
            f"the server to use ({source}) is given in a form libpq cannot use: {exc}. "
            "Correct it, or unset it to let pgsandbox start a private local server."
        ) from None


def _docker(settings: Settings, run: str | None, owner_pid: int | None) -> PgServer:
    """A container: private, or (under a lock) the one this run's workers share, or the
    one kept for reuse with this image; whoever comes first starts it."""
    import hashlib

    from pytest_pgsandbox._engine.servers import docker

    shared = None if settings.reuse else run
    server = docker.DockerServer(
        settings.image, settings.start_timeout, settings.reuse, run=shared, owner_pid=owner_pid
    )
    if not settings.reuse and run is None:
        server.start()
        return server
    runtime = places.runtime_dir(settings.runtime_dir, settings.tmpfs)
    if shared is not None:
        lock, whose = runtime / f"run-{shared}.lock", "another worker of this run"
    else:
        key = hashlib.sha256(settings.image.encode()).hexdigest()[:16]
        lock, whose = runtime / f"docker-reuse-{key}.lock", "another session"
    try:
        with FileLock(str(lock), timeout=settings.start_timeout):
            if shared is not None:
                # Written first: the controller removes the run's container if it exists.
                docker.run_marker(runtime, shared).touch()
            server.start()
    except Timeout:
        raise ServerStartError(
            f"waited {settings.start_timeout:.0f} s for {whose} to start the container "
            f"from {settings.image}. Raise --pg-start-timeout if this machine is very slow."
        ) from None
    return server


def open_server(
    settings: Settings,
    run: str | None = None,
    owner_pid: int | None = None,
    prebuild: Prebuild | None = None,
    project: str | None = None,
) -> PgServer:
    """Start or attach to the server the settings ask for.

    ``run``: the id of an xdist run whose workers share one local server; the first worker
    to get here starts it (under a lock), on behalf of ``owner_pid`` (the controller).

    ``project``: the folder the run starts from. A run attaches to a reusable local server
    only when it was started for this project (by ``pgsandbox start`` there, or by a run of
    it with reuse on), and not at all when reuse is turned off explicitly; any other server
    is used only when named (url).
    """
    if settings.uses_existing_server:
        server = ExternalServer(*external_url(settings), settings.start_timeout, guard=True)
        external.check_host(server.admin, settings.allow_hosts, server.source)
        server.start()
        return server
    if settings.server == "docker":
        return _docker(settings, run, owner_pid)
    try:
        binaries = find_binaries(settings.bin_dir)
    except BinariesNotFound as exc:
        if settings.server != "auto" or settings.bin_dir is not None:
            raise
        from pytest_pgsandbox._engine.servers import docker

        problem = docker.daemon_problem()
        if problem is not None:
            raise BinariesNotFound(
                f"{exc}\n  - or start Docker: with a daemon, pgsandbox runs PostgreSQL in a "
                f"container (server=docker; here: {problem})"
            ) from None
        return _docker(settings, run, owner_pid)
    if settings.attach:
        return named_server(settings)
    if settings.reuse:
        return reusable_server(settings, binaries, prebuild, project)
    if settings.source("reuse") == "default":  # not turned off: this project's, if it runs
        attached = _attach(binaries, settings, project=project)
        if attached is not None:
            return attached
    if run is None:
        cluster = local_cluster(settings, binaries, prebuild=prebuild, project=project)
        cluster.start()
        return cluster
    runtime = places.runtime_dir(settings.runtime_dir, settings.tmpfs)
    try:
        with FileLock(str(runtime / f"run-{run}.lock"), timeout=settings.start_timeout):
            attached = _attach(binaries, settings, run)
            if attached is not None:
                return attached
            cluster = local_cluster(
                settings,
                binaries,
                run=run,
                owner_pid=owner_pid,
                prebuild=prebuild,
                project=project,
            )
            cluster.start()
            return cluster
    except Timeout:
        raise ServerStartError(
            f"waited {settings.start_timeout:.0f} s for another worker of this run to start "
            "the shared server. Raise --pg-start-timeout if this machine is very slow."
        ) from None
