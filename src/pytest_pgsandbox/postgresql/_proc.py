"""What a ``postgresql_proc`` / ``postgresql_noproc`` fixture gives a test: the session's server
(its address, who to be there, its version) and the template its client fixtures copy.

The attributes are pytest-postgresql's executor's (``host``, ``port``, ``user``, ``password``,
``dbname``, ``options``, ``template_dbname``, ``version``, ``maintenance_dbname``,
``unixsocketdir``, ``running()``); the work behind them is the plugin's engine: one server per
run, shared by xdist workers, and ``load=`` built once into a template named by its hash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from pytest_pgsandbox._engine.servers.base import PgServer
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._version import __version__
from pytest_pgsandbox.errors import ServerDied
from pytest_pgsandbox.postgresql import _load
from pytest_pgsandbox.postgresql._user import Identity

if TYPE_CHECKING:
    from pytest_pgsandbox._engine.sandbox import Sandbox
    from pytest_pgsandbox._engine.templates.template import PgTemplate


@dataclass(frozen=True)
class ProcArgs:
    """The arguments a ``postgresql_proc`` / ``postgresql_noproc`` factory was given."""

    kind: str  # "proc" or "noproc"
    executable: str | None = None
    host: str | None = None
    port: Any = None
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    dbname: str | None = None
    options: str = ""
    startparams: str | None = None
    unixsocketdir: str | None = None
    postgres_options: str | None = None
    load: tuple[_load.LoadItem, ...] = ()
    load_autocommit: bool | None = None
    maintenance_dbname: str | None = None
    depends_on: str | None = None


class PostgreSQLProc:
    """The server as pytest-postgresql's ``postgresql_proc`` fixture shows it."""

    def __init__(
        self,
        sandbox: Sandbox,
        server: PgServer,
        template: PgTemplate | None,
        dbname: str,
        options: str,
        maintenance_dbname: str,
        name: str,
        identity: Identity,
    ) -> None:
        from packaging.version import parse

        info = server.admin
        self._sandbox = sandbox
        self._server = server
        self.template = template  # what client fixtures copy (None: template1)
        self.fixture_name = name
        self.identity = identity  # who client fixtures log in as
        self.host = info.host
        self.port = info.port
        self.user = identity.user
        self.password = identity.password
        self.dbname = dbname  # what client fixtures name the test's database
        self.options = options
        self.maintenance_dbname = maintenance_dbname
        self.unixsocketdir = info.host if info.is_socket else None
        major_minor = ".".join(server.version.split(".")[:2])
        self.version = parse(major_minor)

    @property
    def template_dbname(self) -> str:
        """The database client fixtures are copies of (``template1`` without ``load=``)."""
        return self.template.name if self.template is not None else "template1"

    @property
    def sandbox(self) -> Sandbox:
        return self._sandbox

    @property
    def server(self) -> PgServer:
        return self._server

    def running(self) -> bool:
        try:
            self._server.check_alive()
        except ServerDied:
            return False
        return self._sandbox.server is self._server

    def __repr__(self) -> str:
        return (
            f"<PostgreSQLProc {self.fixture_name} {self.user}@{self.host}:{self.port} "
            f"template={self.template_dbname}>"
        )


def build_template(
    sandbox: Sandbox,
    server: PgServer,
    base: PgTemplate | None,
    load: Sequence[_load.LoadItem],
    autocommit: bool,
    rootpath: Path,
    family: str,
    identity: Identity,
) -> PgTemplate | None:
    """``base`` with ``load`` applied on top: found on the server, or built now, once.

    For a user of its own (``identity.owner``) the template is that role's and the loaders
    log in as it, so that it owns what they create, as the user of pytest-postgresql's own
    server would.
    """
    if not load:
        return base
    from psycopg import sql

    from pytest_pgsandbox._engine.templates.template import ensure_built
    from pytest_pgsandbox._engine.urls import connect

    loaders = [_load.resolve(item, rootpath) for item in load]
    major = server.version.split(".")[0]
    origin = f"pgsandbox {__version__} postgresql {major} {base.fingerprint if base else ''}"
    if identity.owner is not None:
        origin += f" owner {identity.owner}"
    digest = _load.digest(loaders, origin, autocommit)
    timeout = sandbox.settings.start_timeout

    def fill(info: ConnInfo) -> None:
        if identity.owner is not None:
            with connect(server.admin, timeout=timeout) as conn:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(info.dbname), sql.Identifier(identity.owner)
                    )
                )
            info = identity.info(info, info.dbname)
        for loader in loaders:
            loader.run(info, autocommit, timeout)

    return ensure_built(
        server.admin,
        digest,
        fill,
        sandbox.run_id,
        timeout,
        source=base.name if base else None,
        family=f"pytest-postgresql:{family}",
    )
