"""One test session's PostgreSQL: the server, the template, the test databases, isolation.

The plugin and the command line both drive this; it knows nothing of pytest. Heavy imports
(psycopg) happen on first use, so that merely loading the plugin stays cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from pytest_pgsandbox._engine.naming import database_name
from pytest_pgsandbox._engine.servers.base import PgServer
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.errors import ServerError
from pytest_pgsandbox.settings import Settings

if TYPE_CHECKING:  # these import psycopg: only once a database is needed
    import psycopg
    from psycopg.rows import TupleRow

    from pytest_pgsandbox._engine.isolation.clone import CloneDatabase
    from pytest_pgsandbox._engine.isolation.clone import ClonePool
    from pytest_pgsandbox._engine.isolation.inplace import InPlace
    from pytest_pgsandbox._engine.isolation.reset import ResetDatabase
    from pytest_pgsandbox._engine.isolation.transaction import TransactionIsolation
    from pytest_pgsandbox._engine.servers.roles import TestRole
    from pytest_pgsandbox._engine.templates.migration_cache import Result
    from pytest_pgsandbox._engine.templates.migration_data import MigrationDatabase
    from pytest_pgsandbox._engine.templates.revision_data import RevisionData
    from pytest_pgsandbox._engine.templates.template import PgTemplate
    from pytest_pgsandbox._engine.templates.template import TemplateSpec


@dataclass(frozen=True)
class XdistRun:
    """This process is an xdist worker: the run's id and its controller's process id."""

    run_id: str
    controller_pid: int


def _needs_tcp(env: tuple[tuple[str, str], ...]) -> bool:
    from pytest_pgsandbox._engine.appenv import placeholders_of

    return any({"host", "port"} & set(placeholders_of(template)) for _, template in env)


class Sandbox:
    """Starts the server on first use, builds the template, provides the test databases."""

    def __init__(
        self,
        settings: Settings,
        run_id: str,
        worker: str = "main",
        base: Path | None = None,
        xdist: XdistRun | None = None,
        secret: str | None = None,
    ) -> None:
        if settings.env and not (settings.tcp or settings.port) and _needs_tcp(settings.env):
            # An application that assembles its URL from host and port needs a TCP address.
            settings = settings.with_values(tcp=True)
        self.settings = settings
        # Passwords of this run's roles derive from it (the same in every xdist worker).
        self.secret = secret or secrets.token_urlsafe(32)
        self.role: TestRole | None = None  # who the tests are, with the role setting
        self.run_id = run_id
        self.worker = worker
        self.base = base or Path.cwd()
        self.xdist = xdist
        self.server: PgServer | None = None
        self._early: PgServer | None = None  # started before conftest.py files (env setting)
        self.env: dict[str, str] = {}  # what the env setting set (passwords in it: never shown)
        self.env_shown: dict[str, str] = {}  # the same, passwords masked
        self.template: PgTemplate | None = None
        # A role that may not create databases: the tests run in the URL's database itself.
        self.place: InPlace | None = None
        self._place_rebuilds = 0  # rebuilds in place the isolation verifier has seen
        self.error: PgSandboxError | None = None
        self.startup_seconds = 0.0
        self.early_seconds = 0.0
        self._databases: dict[str | None, str] = {}  # template name -> test database
        self._created: list[str] = []
        self._isolations: dict[str, TransactionIsolation] = {}
        self._pools: dict[tuple[str, str | None], ClonePool] = {}
        self._resets: dict[str | None, ResetDatabase] = {}
        self._pictures: dict[str, dict[str, str]] = {}  # database -> what it held when new
        self._baselines: dict[str, str] = {}  # template -> its catalog digest
        self.kept: list[str] = []
        self.current_handle: Any = None  # the running test's PgDatabase
        self.current_pg2: Any = None  # its psycopg2 connection (driver=psycopg2), once opened
        # Called after each test: close what engines opened for it (pg_engine's connections).
        self.engines_to_close: list[Callable[[], None]] = []
        # Tests of this session ask for scenarios: a new local server's cluster cache then
        # holds every scenario's template too, so they are loaded once, not once per run.
        self.scenarios_wanted = False
        self._scenario_templates: dict[tuple[str | None, str], PgTemplate] = {}
        self._scenario_errors: dict[tuple[str | None, str], PgSandboxError] = {}
        self.scenario_failed_in: dict[str, str] = {}  # scenario -> the first test it failed
        self._checks: dict[tuple[str, str], Result] = {}  # (source, check) -> its result
        self._checks_cache: Path | None = None
        self._migration_dbs = 0
        # More templates a new local server's cluster cache holds (e.g. a Django project's):
        # (PostgreSQL major -> digest of their inputs, build on (admin, major)).
        self.more_templates: tuple[Callable[[int], str], Callable[[ConnInfo, int], None]] | None
        self.more_templates = None

    def spec(self) -> TemplateSpec:
        from pytest_pgsandbox._engine.templates.template import Source
        from pytest_pgsandbox._engine.templates.template import TemplateSpec

        s = self.settings
        return TemplateSpec(
            schema=tuple(Source(*item) for item in s.schema),
            seed=tuple(Source(*item) for item in s.seed),
            extensions=s.extensions,
            inputs=s.template_inputs,
            base=self.base,
            scenarios_dir=s.scenarios_dir,
            role=s.role,
            env=s.env,
        )

    @property
    def project(self) -> str:
        """The project this session belongs to (reusable servers are kept per project)."""
        return str(self.base.resolve())

    @property
    def opened(self) -> PgServer | None:
        """The server, once started (or only started so far, for the env setting)."""
        return self.server or self._early

    @property
    def env_database(self) -> str:
        """The database the env setting's ``{dbname}`` names: this session's (worker's)."""
        return database_name("session", self.run_id, self.worker, "env")

    def _env_is(self, kind: str, template: PgTemplate | None) -> bool:
        """Whether the env setting's database is this session's ``kind`` ("reset" under reset
        isolation, else "session") of ``template``: the base template's."""
        if not self.settings.env or template is not self.template:
            return False
        return kind == ("reset" if self.settings.isolation == "reset" else "session")

    def prepare_env_database(self) -> None:
        """Create the env setting's database now (tests may not: clone isolation never
        does), so that applications find it from the first test on."""
        if not self.settings.env or self.place is not None:
            return
        if self.settings.isolation == "reset":
            self.reset(self.template)
        else:
            self.database(self.template)

    def open_early(self, run: str | None = None, owner_pid: int | None = None) -> dict[str, str]:
        """Start (or attach to) the server now, before the template is built, and return the
        variables the env setting makes of it; ``ensure_server`` builds the template on it.

        ``run``/``owner_pid``: as for ``open_server`` (the xdist run whose workers share it)
        when this process is the run's controller.
        """
        from pytest_pgsandbox._engine import appenv
        from pytest_pgsandbox._engine.servers.choice import open_server

        settings = self.settings
        if settings.keep != "never" and not settings.reuse:
            settings = settings.with_values(reuse=True)  # as ensure_server does
        xdist = self.xdist
        began = time.monotonic()
        try:
            self._early = open_server(
                settings,
                run=run or (xdist.run_id if xdist else None),
                owner_pid=owner_pid or (xdist.controller_pid if xdist else None),
                project=self.project,
            )
        except PgSandboxError as exc:
            self.error = exc
            raise
        self.early_seconds = time.monotonic() - began
        info = self._early.admin.for_db(self.env_database)
        if not getattr(self._early, "may_create_databases", True):
            info = self._early.admin  # the tests will run in the URL's database, in place
        else:
            from pytest_pgsandbox._engine.templates.guard import stand_in_for_templates

            stand_in_for_templates(info)  # settings made at import name it, and mean the template
        self.env = appenv.render(settings.env, info)
        self.env_shown = appenv.render(settings.env, info, masked=True)
        return self.env

    def ensure_server(self) -> PgServer:
        """The running server (and template); a failure is remembered and raised again."""
        if self.server is not None:
            return self.server
        if self.error is not None:
            raise self.error
        early, self._early = self._early, None
        from pytest_pgsandbox._engine.servers.choice import Prebuild
        from pytest_pgsandbox._engine.servers.choice import open_server
        from pytest_pgsandbox._engine.templates.template import fingerprint

        began = time.monotonic()
        xdist = self.xdist
        spec = self.spec()
        prebuilt: list[PgTemplate] = []

        more = self.more_templates

        def build(admin: ConnInfo, major: int) -> None:
            if not spec.empty:
                template = self._ensure_template(admin, spec, major)
                prebuilt.append(template)
                if self.scenarios_wanted:
                    self._prebuild_scenarios(admin, template, major)
            if more is not None:
                more[1](admin, major)

        def digest(major: int) -> str:
            found = "" if spec.empty else fingerprint(spec, major)
            if self.scenarios_wanted:
                found = hashlib.sha256(f"{found} {self._scenarios_digest()}".encode()).hexdigest()
            if more is not None:
                found = hashlib.sha256(f"{found} more {more[0](major)}".encode()).hexdigest()
            return found

        settings = self.settings
        if settings.keep != "never" and not settings.reuse:
            # Kept databases must outlive the session: so must a local server.
            settings = settings.with_values(reuse=True)
        try:
            server = early or open_server(
                settings,
                run=xdist.run_id if xdist else None,
                owner_pid=xdist.controller_pid if xdist else None,
                prebuild=None if spec.empty and more is None else Prebuild(digest, build),
                project=self.project,
            )
        except PgSandboxError as exc:
            self.error = exc
            raise
        try:
            self.place = self._in_place(server, spec)
            if self.place is not None:
                self.template = self._place_template(self.place)
            elif not spec.empty:
                # Already in a new private server's data when it came from the cache (and
                # built there just now if ``prebuilt``); else found or built on the server.
                found = self.build_template(server, spec)
                self.template = prebuilt[0] if prebuilt else found
            if self.settings.role:
                self.role = self._prepare_role(server, self.settings.role)
        except PgSandboxError as exc:
            self.error = exc
            self._stop(server)
            raise
        self.server = server
        self.startup_seconds = time.monotonic() - began + (self.early_seconds if early else 0)
        return server

    def _in_place(self, server: PgServer, spec: TemplateSpec) -> InPlace | None:
        """The URL's database to run the tests in, if the role may not create databases."""
        from pytest_pgsandbox._engine.isolation import inplace
        from pytest_pgsandbox._engine.servers.choice import ExternalServer
        from pytest_pgsandbox._engine.servers.external import MAINTENANCE_DATABASES
        from pytest_pgsandbox._engine.templates.template import filler
        from pytest_pgsandbox._engine.templates.template import fingerprint

        if (
            not isinstance(server, ExternalServer)  # asked when it connected
            or server.may_create_databases
            or server.admin.dbname in MAINTENANCE_DATABASES
        ):
            return None
        s = self.settings
        if s.isolation == "clone":
            raise ServerError(self._no_clone(server))
        major = int(server.version.split(".")[0])
        place = inplace.InPlace(
            server.admin,
            fingerprint(spec, major),
            filler(spec, self.run_id, s.start_timeout, s.url_env),
            self.run_id,
            s.start_timeout,
        )
        place.open()
        return place

    def _place_template(self, place: InPlace) -> PgTemplate:
        from pytest_pgsandbox._engine.templates.template import PgTemplate

        self._baselines[place.info.dbname] = place.baseline
        return PgTemplate(place.info.dbname, place.digest, place.reused, place.build_seconds)

    def _no_clone(self, server: PgServer) -> str:
        info = server.admin
        return (
            f'isolation="clone" makes a database per test, and the role {info.user!r} may not '
            f"create databases on this server; the tests would run in the URL's database "
            f'{info.dbname!r} in place. Use isolation "reset" (any connection may commit) '
            f'or "transaction" there, or grant the role CREATEDB (ALTER ROLE {info.user} '
            "CREATEDB)."
        )

    def _prepare_role(self, server: PgServer, name: str) -> TestRole:
        import psycopg

        from pytest_pgsandbox._engine.servers import roles

        per_worker = self.settings.role_per_worker and self.xdist is not None
        try:
            with self._admin(server) as conn:
                return roles.prepare(
                    conn,
                    name,
                    secret=self.secret,
                    server_is_ours=server.owns_cluster,
                    worker=self.worker if per_worker else None,
                    label={"kind": "role", "run": self.run_id, "worker": self.worker},
                )
        except psycopg.Error as exc:
            raise ServerError(
                f"could not make the role {name!r} (the role setting, from "
                f"{self.settings.source('role')}) ready for the tests: {str(exc).strip()}\n"
                "  pgsandbox creates it unless it exists, and gives a role it created a fresh "
                "password; connect as a superuser or a role with CREATEROLE, or unset role."
            ) from None

    def become(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Make ``conn`` (the superuser's) act as the role, if tests run as one."""
        if self.role is not None:
            conn.execute(self.role.set_role())
            conn.commit()

    def tester(self, info: ConnInfo) -> ConnInfo:
        """How code under test connects to the test database ``info`` (the superuser's):
        as the role when the role setting asks for one."""
        return info if self.role is None else self.role.info(info)

    @property
    def local_role(self) -> str:
        """``SET LOCAL ROLE ...; `` for an outer transaction of a test ("" without a role)."""
        return f"{self.role.set_role(local=True)}; " if self.role else ""

    @property
    def only_role(self) -> str | None:
        return None if self.role is None else self.role.only

    def build_template(self, server: PgServer, spec: TemplateSpec) -> PgTemplate:
        """The template for ``spec`` on ``server``: found there, or built now."""
        return self._ensure_template(server.admin, spec, int(server.version.split(".")[0]))

    def _ensure_template(self, admin: ConnInfo, spec: TemplateSpec, major: int) -> PgTemplate:
        from pytest_pgsandbox._engine.templates.template import ensure_template

        return ensure_template(
            admin,
            spec,
            major,
            self.run_id,
            timeout=self.settings.start_timeout,
            url_env=self.settings.url_env,
        )

    def _scenarios_digest(self) -> str:
        """A hash of every scenario's files (a broken one counts by its name)."""
        from pytest_pgsandbox._engine.templates import scenario

        folder = self.spec().scenarios
        parts = []
        for name in scenario.names(folder):
            try:
                parts.append(f"{name} {scenario.find(folder, name).content_hash()}")
            except PgSandboxError:
                parts.append(f"{name} unreadable")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def _prebuild_scenarios(self, admin: ConnInfo, base: PgTemplate, major: int) -> None:
        """Load every scenario that fits into a template of its own (on a server being
        prepared for the cluster cache); those that do not fit report it when used."""
        from pytest_pgsandbox._engine.templates import scenario
        from pytest_pgsandbox._engine.templates.template import ensure_scenario_template

        folder = self.spec().scenarios
        for name in scenario.names(folder):
            with contextlib.suppress(PgSandboxError):
                chain = scenario.find(folder, name)
                self._scenario_templates[(base.name, name)] = ensure_scenario_template(
                    admin, base, chain, major, self.run_id, self.settings.start_timeout
                )

    def scenario_template(self, base: PgTemplate | None, name: str) -> PgTemplate:
        """The template holding scenario ``name`` on top of ``base``: found, or loaded now.

        A failure (no such scenario, or it does not fit the schema) is remembered and raised
        again for every later test that asks for it.
        """
        from pytest_pgsandbox._engine.templates import scenario
        from pytest_pgsandbox._engine.templates.template import ensure_scenario_template

        key = (base.name if base else None, name)
        found = self._scenario_templates.get(key)
        if found is not None:
            return found
        failed = self._scenario_errors.get(key)
        if failed is not None:
            raise failed
        server = self.ensure_server()
        if self.place is not None:
            raise ServerError(
                f"scenario {name!r} needs a template database of its own, and the role "
                f"{server.admin.user!r} may not create databases on this server (the tests "
                f"run in {server.admin.dbname!r} in place). Load it with a fixture instead, or "
                "grant the role CREATEDB."
            )
        try:
            chain = scenario.find(self.spec().scenarios, name)
            found = ensure_scenario_template(
                server.admin,
                base,
                chain,
                int(server.version.split(".")[0]),
                self.run_id,
                self.settings.start_timeout,
            )
        except PgSandboxError as exc:
            self._scenario_errors[key] = exc
            raise
        self._scenario_templates[key] = found
        return found

    def prepare_migration_checks(self) -> Path:
        """Where migration check results are kept; importing what the checks need now, so
        that a check answered from the cache costs a file read."""
        if self._checks_cache is None:
            from pytest_pgsandbox._engine.servers import places
            from pytest_pgsandbox._engine.templates import migration_cache  # noqa: F401

            s = self.settings
            runtime = places.runtime_dir(s.runtime_dir, s.tmpfs)
            self._checks_cache = places.cache_dir(s.cache_dir, runtime)
        return self._checks_cache

    def migration_check(
        self,
        source: str,
        check: str,
        wanted: tuple[str, ...],
        data: RevisionData | None = None,
    ) -> Result:
        """The result of migration check ``check`` of the Alembic source ``source``
        (``alembic:PATH``): the first call runs (or reads from the cache) all ``wanted``,
        the walk putting in ``data`` on its way up."""
        key = (source, check)
        found = self._checks.get(key)
        if found is not None:
            return found
        from pytest_pgsandbox._engine.templates.migration_cache import run_checks

        server = self.ensure_server()
        template = self.template
        if template is None:  # pragma: no cover - an alembic source makes a template
            raise ServerError(f"{source}: no template was built for it")
        if self.place is not None and check != "single_head":
            raise ServerError(
                f"{source}: the migration checks walk the history in a database of their own, "
                f"and the role {server.admin.user!r} may not create databases on this server. "
                "Run them on a local server (unset url for that run), or grant CREATEDB."
            )
        s = self.settings
        spec = self.spec()
        src = next(x for x in spec.schema if str(x) == source)
        results = run_checks(
            server.admin,
            spec,
            src,
            template.fingerprint,
            wanted,
            self.prepare_migration_checks(),
            self.run_id,
            self.worker,
            s.migrations_timeout,
            s.start_timeout,
            s.url_env,
            data,
            s.migrations_models,
        )
        for name, result in results.items():
            self._checks[(source, name)] = result
        return results[check]

    def migration_database(self, data: RevisionData | None = None) -> MigrationDatabase:
        """A new database at the base of the (first) Alembic history of the schema setting,
        for a test to move through it (its upgrades putting in ``data``); the caller closes
        it (which drops it)."""
        from pytest_pgsandbox._engine.templates import alembic_source
        from pytest_pgsandbox._engine.templates.migration_cache import base_database
        from pytest_pgsandbox._engine.templates.migration_data import MigrationDatabase

        spec = self.spec()
        src = next((x for x in spec.schema if x.kind == "alembic"), None)
        if src is None:
            raise ServerError(
                "pg_migrations moves a database through an Alembic history, and the schema "
                "setting has no alembic: source (pg_schema = alembic:alembic.ini)."
            )
        server = self.ensure_server()
        if self.place is not None:
            raise ServerError(
                f"pg_migrations needs a database of its own, and the role {server.admin.user!r} "
                "may not create databases on this server; grant it CREATEDB."
            )
        s = self.settings
        self._migration_dbs += 1
        name = database_name("mdata", self.run_id, self.worker, str(self._migration_dbs))
        files = alembic_source.locate(spec.path(src.target), str(src))
        info = base_database(
            server.admin, spec, src, name, self.run_id, self.worker, s.start_timeout, s.url_env
        )
        return MigrationDatabase(
            server.admin, info, files, str(src), s.start_timeout, s.url_env, data
        )

    def _admin(self, server: PgServer) -> psycopg.Connection[TupleRow]:
        return connect(server.admin, timeout=self.settings.start_timeout)

    def database(self, template: PgTemplate | None) -> ConnInfo:
        """This session's test database (a copy of ``template``), created on first use."""
        from pytest_pgsandbox._engine.servers import provision
        from pytest_pgsandbox._engine.servers.options import SESSION_DB

        server = self.ensure_server()
        if self.place is not None:
            return self.place.info
        key = template.name if template else None
        name = self._databases.get(key)
        if name is None and self._env_is("session", template):
            # The database the env setting points applications at.
            name = self.env_database
            with self._admin(server) as conn:
                provision.create_database(
                    conn,
                    name,
                    self._label(),
                    key,
                    only_role=self.only_role,
                )
            self._created.append(name)
            self._databases[key] = name
        if name is None:
            if template is None and server.owns_cluster and self.xdist is None:
                # An empty database made once in the cached cluster. Not shared between
                # xdist workers: one's frozen clock must not reach another's tests.
                name = SESSION_DB
            else:
                parts = [template.fingerprint[:8]] if template else []
                name = database_name("session", self.run_id, self.worker, *parts)
                with self._admin(server) as conn:
                    provision.create_database(
                        conn,
                        name,
                        self._label(),
                        template.name if template else None,
                        only_role=self.only_role,
                    )
                self._created.append(name)
            self._databases[key] = name
        return server.admin.for_db(name)

    @property
    def current(self) -> psycopg.Connection[TupleRow] | None:
        """The running test's connection (it changes when ``reset_db()`` restarts it)."""
        handle = self.current_handle
        return None if handle is None else handle.conn

    def catalog_baseline(self, template: PgTemplate | None) -> str:
        """The catalog digest of ``template`` (what ``is_dirty()`` compares with), once."""
        from pytest_pgsandbox._engine.isolation.verify import catalog_digest

        source = template.name if template else "template1"
        found = self._baselines.get(source)
        if found is None:
            server = self.ensure_server()
            with connect(server.admin.for_db(source), timeout=self.settings.start_timeout) as c:
                found = self._baselines[source] = catalog_digest(c)
        return found

    def _label(self) -> dict[str, object]:
        return {"kind": "session", "run": self.run_id, "worker": self.worker}

    def isolation(self, template: PgTemplate | None) -> TransactionIsolation:
        from pytest_pgsandbox._engine.isolation.transaction import TransactionIsolation

        info = self.database(template)
        found = self._isolations.get(info.dbname)
        if found is None:
            found = TransactionIsolation(
                info,
                lambda: self.repair(info.dbname, template),
                self.settings.start_timeout,
                set_role=self.local_role,
            )
            self._isolations[info.dbname] = found
        return found

    def copy_strategy(self, server: PgServer) -> str | None:
        """How CREATE DATABASE copies the template: FILE_COPY for data in RAM, else default.

        Measured by ``bench/clone_strategy.py``: with the data in RAM, FILE_COPY was 15-35 %
        faster than WAL_LOG on PostgreSQL 15 and 18; on disk neither wins reliably (and
        FILE_COPY forces checkpoints), so the server's default stays. With tests running
        next to the copies (``bench/isolation.py``, clone, writing tests) the gap is wider:
        10 against 15 ms per test, and 8.5 against 13 under ``-n 2``.
        """
        from pytest_pgsandbox._engine.servers import places

        if getattr(server, "data_in_ram", False):  # a container whose data is a tmpfs
            return "FILE_COPY"
        folder = getattr(server, "folder", None)  # a local server, started here or attached to
        if not isinstance(folder, Path):
            return None
        return "FILE_COPY" if places.in_ram(folder) else None

    def _pool(self, kind: str, server: PgServer, source: str, size: int) -> ClonePool:
        from pytest_pgsandbox._engine.isolation.clone import ClonePool

        key = (kind, source)
        pool = self._pools.get(key)
        if pool is None:
            n = len(self._pools)
            pool = ClonePool(
                server.admin,
                source,
                lambda i: database_name(kind, self.run_id, self.worker, f"{n}x{i}"),
                {"kind": kind, "run": self.run_id, "worker": self.worker},
                size=size,
                timeout=self.settings.start_timeout,
                strategy=self.copy_strategy(server),
                only_role=self.only_role,
                # A reset database's spares are never handed back, nor used by a test as they are.
                recycling=kind == "clone",
                connect_ahead=kind == "clone",
            )
            self._pools[key] = pool
        return pool

    def clone(self, template: PgTemplate | None) -> CloneDatabase:
        """A database of the test's own, copied from ``template`` (prepared ahead of time)."""
        from pytest_pgsandbox._engine.isolation.clone import CloneDatabase

        return CloneDatabase(self.clone_pool(template), self.settings.start_timeout)

    def clone_pool(self, template: PgTemplate | None) -> ClonePool:
        """The copies of ``template`` that clone isolation hands to tests."""
        server = self.ensure_server()
        if self.place is not None:
            raise ServerError(self._no_clone(server))
        source = template.name if template else "template1"
        return self._pool("clone", server, source, self.settings.clone_pool)

    def reset(self, template: PgTemplate | None) -> ResetDatabase:
        """This worker's database for reset isolation (made on first use)."""
        from pytest_pgsandbox._engine.isolation.reset import ResetDatabase
        from pytest_pgsandbox._engine.isolation.reset import make_reset_template

        key = template.name if template else None
        found = self._resets.get(key)
        if found is not None:
            return found
        server = self.ensure_server()
        if self.place is not None:
            from pytest_pgsandbox._engine.isolation.inplace import ResetInPlace

            found = self._resets[key] = ResetInPlace(self.place)
            return found
        parts = [template.fingerprint[:8]] if template else []
        source = database_name("rtpl", self.run_id, self.worker, *parts)
        make_reset_template(
            server.admin,
            template.name if template else None,
            source,
            {"kind": "reset-template", "run": self.run_id, "worker": self.worker},
            self.settings.start_timeout,
        )
        self._created.append(source)
        pool = self._pool("reset", server, source, 1)  # a spare for when a test runs DDL
        name = database_name("reset", self.run_id, self.worker, *parts)
        if self._env_is("reset", template):
            name = self.env_database  # the database applications configured by env reach
        found = ResetDatabase(server.admin, pool, name, self.settings.start_timeout)
        self._resets[key] = found
        return found

    def kept_name(self, info: ConnInfo, reset: bool) -> str:
        """The name a test's database will be kept under (reset renames the worker's own)."""
        if not reset:
            return info.dbname
        return database_name("kept", self.run_id, self.worker, str(len(self.kept) + 1))

    def keep(
        self,
        info: ConnInfo,
        test: str,
        reset: ResetDatabase | None = None,
        name: str | None = None,
    ) -> ConnInfo:
        """Keep a test's database past the session (relabelled, for pgsandbox gc)."""
        from pytest_pgsandbox._engine.servers import provision

        server = self.ensure_server()
        name = name or self.kept_name(info, reset is not None)
        if reset is not None:
            reset.swap(keep_as=name)
        with self._admin(server) as conn:
            provision.relabel(conn, name, {"kind": "kept", "run": self.run_id, "test": test})
        self.kept.append(name)
        return server.admin.for_db(name)

    def has_picture(self, dbname: str) -> bool:
        return dbname in self._pictures

    def verify(
        self, info: ConnInfo, conn: psycopg.Connection[TupleRow] | None, key: str | None = None
    ) -> list[str]:
        """How the database ``info`` differs from when it was new ([] if it does not).

        The first call for a database only takes its picture. ``key``: what the picture is
        of, when not of ``info``'s database alone (clone's copies of one template share one).
        """
        from pytest_pgsandbox._engine.isolation.verify import differences
        from pytest_pgsandbox._engine.isolation.verify import picture

        if conn is None or conn.closed or conn.broken:
            admin = self.ensure_server().admin.for_db(info.dbname)
            with connect(admin, timeout=self.settings.start_timeout, autocommit=False) as own:
                now = picture(own)
        else:
            now = picture(conn)
        if self.place is not None and self.place.rebuilds != self._place_rebuilds:
            # Built again in place: its seed ran again (now() defaults differ). The new
            # database is the template from here on.
            self._place_rebuilds = self.place.rebuilds
            self._pictures.pop(info.dbname, None)
        before = self._pictures.setdefault(key or info.dbname, now)
        return differences(before, now)

    def repair(self, dbname: str, template: PgTemplate | None) -> None:
        """Replace a test database with a fresh copy (after a test committed for real)."""
        from pytest_pgsandbox._engine.servers import provision

        server = self.ensure_server()
        if self.place is not None:
            self.place.restore()
            return
        with self._admin(server) as conn:
            provision.drop_database(conn, dbname)
            provision.create_database(
                conn,
                dbname,
                self._label(),
                template.name if template else None,
                only_role=self.only_role,
            )

    def _stop(self, server: PgServer) -> None:
        if not server.outlives_session:
            server.stop()

    def close(self) -> None:
        """Drop what this session created and stop a server it started."""
        import psycopg

        aio = sys.modules.get("pytest_pgsandbox._engine.drivers.aio")
        if aio is not None:  # async connections kept for tests that did not come
            aio.close_idle()
        for isolation in self._isolations.values():
            # The server may be gone already: then there is nothing left to roll back.
            with contextlib.suppress(psycopg.Error):
                isolation.close()
        self._isolations.clear()
        server, self.server = self.server, None
        early, self._early = self._early, None
        if server is None:
            if early is not None:
                self._stop(early)
            return
        outlives = server.outlives_session
        for reset in self._resets.values():
            with contextlib.suppress(psycopg.Error):
                reset.close(drop=outlives)
        self._resets.clear()
        if self.place is not None:
            self.place.close()
            self.place = None
        for pool in self._pools.values():
            with contextlib.suppress(psycopg.Error):
                pool.close(drop=outlives)
        self._pools.clear()
        try:
            # A server that is about to be thrown away needs no dropping first.
            if self._created and server.outlives_session:
                from pytest_pgsandbox._engine.servers import provision

                with self._admin(server) as conn:
                    for name in self._created:
                        provision.drop_database(conn, name)
            if self.role is not None and server.outlives_session:
                from pytest_pgsandbox._engine.servers import roles

                with self._admin(server) as conn:
                    roles.drop_own(conn, self.role)
        finally:
            self.role = None
            self._created.clear()
            self._databases.clear()
            self._stop(server)
