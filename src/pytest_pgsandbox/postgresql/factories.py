"""pytest-postgresql's fixture factories on pytest-pgsandbox's engine.

A conftest written for pytest-postgresql keeps its fixtures; only its import changes::

    from pytest_pgsandbox.postgresql import factories

    postgresql_my_proc = factories.postgresql_proc(load=[Path("schema.sql")])
    postgresql_my = factories.postgresql("postgresql_my_proc", dbname="app")

- ``postgresql_proc`` / ``postgresql_noproc``: the session's server (one per run, shared by
  xdist workers, from the cluster cache) with ``load=`` built once into a template named by
  the hash of its inputs, reused while they do not change.
- ``postgresql`` / ``postgresql_async``: a psycopg connection to a database of the test's
  own, copied from that template (clone isolation): the test may commit and open more
  connections. ``isolation="reset"`` (or ``"transaction"``), as a factory argument or with
  ``@pytest.mark.pg(isolation=...)``, trades that for speed.

Which arguments are honoured, and why some are not, is in ``docs/migrating.md``.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pytest

from pytest_pgsandbox._plugin.fixtures import _attempt
from pytest_pgsandbox._plugin.fixtures import _fail
from pytest_pgsandbox._plugin.fixtures import database_for
from pytest_pgsandbox._plugin.fixtures import mark_options
from pytest_pgsandbox._plugin.fixtures import sandbox_of
from pytest_pgsandbox.postgresql import _config
from pytest_pgsandbox.postgresql._load import LoadItem
from pytest_pgsandbox.postgresql._named import NamedCopy
from pytest_pgsandbox.postgresql._named import Names
from pytest_pgsandbox.postgresql._named import xdistify
from pytest_pgsandbox.postgresql._proc import PostgreSQLProc
from pytest_pgsandbox.postgresql._proc import ProcArgs
from pytest_pgsandbox.postgresql._proc import build_template
from pytest_pgsandbox.postgresql._user import Identity
from pytest_pgsandbox.postgresql._user import admin_identity
from pytest_pgsandbox.postgresql._user import failure as user_failure
from pytest_pgsandbox.postgresql._user import prepare as prepare_user
from pytest_pgsandbox.postgresql._wishes import ARGS_ATTRIBUTE
from pytest_pgsandbox.postgresql._wishes import PROC_NAME_ATTRIBUTE

if TYPE_CHECKING:
    import psycopg

    from pytest_pgsandbox._engine.sandbox import Sandbox
    from pytest_pgsandbox._engine.servers.base import PgServer
    from pytest_pgsandbox._engine.templates.template import PgTemplate

PortType = Any  # pytest-postgresql's port forms: a number, None, -1, ranges, sets
ISOLATIONS = ("clone", "reset", "transaction")


def postgresql_proc(
    executable: str | None = None,
    host: str | None = None,
    port: PortType | None = -1,
    user: str | None = None,
    password: str | None = None,
    dbname: str | None = None,
    *,
    options: str = "",
    startparams: str | None = None,
    unixsocketdir: str | None = None,
    postgres_options: str | None = None,
    load: list[LoadItem] | None = None,
    load_autocommit: bool | None = None,
) -> Any:
    """A session fixture: the run's server, with ``load`` built into its template once."""
    args = ProcArgs(
        "proc",
        executable=executable,
        host=host,
        port=port,
        user=user,
        password=password,
        dbname=dbname,
        options=options,
        startparams=startparams,
        unixsocketdir=unixsocketdir,
        postgres_options=postgres_options,
        load=tuple(load or ()),
        load_autocommit=load_autocommit,
    )
    return _proc_fixture(args)


def postgresql_noproc(
    host: str | None = None,
    port: str | int | None = None,
    user: str | None = None,
    password: str | None = None,
    dbname: str | None = None,
    *,
    maintenance_dbname: str | None = None,
    options: str = "",
    load: list[LoadItem] | None = None,
    load_autocommit: bool | None = None,
    depends_on: str | None = None,
) -> Any:
    """A session fixture for an existing server (the one it names becomes the run's server)
    or, with ``depends_on``, another layer of ``load`` on top of that fixture's template."""
    args = ProcArgs(
        "noproc",
        host=host,
        port=port,
        user=user,
        password=password,
        dbname=dbname,
        options=options,
        load=tuple(load or ()),
        load_autocommit=load_autocommit,
        maintenance_dbname=maintenance_dbname,
        depends_on=depends_on,
    )
    return _proc_fixture(args)


def _proc_fixture(args: ProcArgs) -> Any:
    def postgresql_proc_fixture(request: pytest.FixtureRequest) -> PostgreSQLProc:
        return _serve_proc(request, args)

    setattr(postgresql_proc_fixture, ARGS_ATTRIBUTE, args)
    return pytest.fixture(scope="session")(postgresql_proc_fixture)


def _serve_proc(request: pytest.FixtureRequest, args: ProcArgs) -> PostgreSQLProc:
    __tracebackhide__ = True
    sandbox = sandbox_of(request)
    server = sandbox.server
    if server is None:  # pragma: no cover - sandbox_of starts it or fails the test
        _fail("the server did not start")
    config = _config.read(request.config)
    name = request.fixturename or "postgresql_proc"
    base: PgTemplate | None
    worker = sandbox.worker if sandbox.xdist is not None else None
    dbname = xdistify(args.dbname or config.get("dbname") or "tests", worker)
    user = args.user or config.get("user")
    password = args.password or config.get("password")
    parent: PostgreSQLProc | None = None
    if args.depends_on:
        found = request.getfixturevalue(args.depends_on)
        if not isinstance(found, PostgreSQLProc):
            _fail(
                f"{name}: depends_on={args.depends_on!r} is a {type(found).__name__}, not a "
                "fixture made by pytest_pgsandbox.postgresql.factories (postgresql_proc or "
                "postgresql_noproc); make that fixture with these factories too."
            )
        parent = found
        base = parent.template
        if not args.dbname:
            dbname = f"{dbname}_{args.depends_on}"
    else:
        base = request.getfixturevalue("pg_template")
    if not user:
        identity = parent.identity if parent is not None else admin_identity(server.admin)
    elif args.kind == "noproc":  # a role of the existing server: log in as it
        identity = _existing(server, str(user), password)
    else:
        identity = _identity(sandbox, server, str(user), password)
    load = args.load or tuple(
        Path(p) if p.endswith(".sql") else p for p in config.get("load") or ()
    )
    autocommit = (
        args.load_autocommit
        if args.load_autocommit is not None
        else bool(config.get("load_autocommit"))
    )
    template = _attempt(
        server,
        f"{name}: could not build the template from load=",
        build_template,
        sandbox,
        server,
        base,
        load,
        autocommit,
        request.config.rootpath,
        name,
        identity,
    )
    maintenance = args.maintenance_dbname or config.get("maintenance_dbname") or "postgres"
    request.addfinalizer(_names(request).close)  # the finished tests' copies back to the pool
    return PostgreSQLProc(
        sandbox,
        server,
        template,
        dbname,
        args.options or config.get("options") or "",
        maintenance,
        name,
        identity,
    )


def _existing(server: PgServer, user: str, password: str | None) -> Identity:
    """A noproc fixture's ``user``: a role the server has, logged in to with ``password``."""
    admin = server.admin
    if user == admin.user:
        return Identity(user, password if password is not None else admin.password)
    return Identity(user, password, owner=user)


def _identity(sandbox: Sandbox, server: PgServer, user: str, password: str | None) -> Identity:
    """Who the client fixtures of a proc fixture with ``user`` log in as."""
    __tracebackhide__ = True
    import psycopg

    from pytest_pgsandbox._engine.urls import connect

    admin = server.admin
    if user == admin.user:  # the server's own superuser: its password is the server's
        return admin_identity(admin)
    key = (user, password)
    known = _IDENTITIES.get(sandbox)
    if known is None:
        known = _IDENTITIES.setdefault(sandbox, {})
    if key in known:
        return known[key]
    try:
        with connect(admin, timeout=sandbox.settings.start_timeout) as conn:
            found = prepare_user(conn, user, password, secret=sandbox.secret, run=sandbox.run_id)
    except psycopg.Error as exc:
        _fail(user_failure(user, exc, admin))
    known[key] = found
    return found


# Per session: the roles made ready, by (user, password).
_IDENTITIES: weakref.WeakKeyDictionary[Sandbox, dict[tuple[str, str | None], Identity]] = (
    weakref.WeakKeyDictionary()
)
_NAMES_KEY = pytest.StashKey[Names]()


def _names(request: pytest.FixtureRequest) -> Names:
    """The session's named copies (see ``_named``)."""
    found = request.config.stash.get(_NAMES_KEY, None)
    if found is None:
        sandbox = sandbox_of(request)
        if sandbox.server is None:  # pragma: no cover - sandbox_of starts it or fails
            _fail("the server did not start")
        found = Names(sandbox.server.admin, sandbox.run_id, sandbox.settings.start_timeout)
        request.config.stash[_NAMES_KEY] = found
    return found


def postgresql(
    process_fixture_name: str,
    dbname: str | None = None,
    isolation_level: psycopg.IsolationLevel | None = None,
    *,
    isolation: str | None = None,
) -> Any:
    """A function fixture: a psycopg connection to the test's own copy of the template.

    ``isolation``: ``"clone"`` (default: a database of the test's own, any connection may
    commit), ``"reset"`` (the worker's database, put back after the test: faster, commits
    allowed) or ``"transaction"`` (rolled back: fastest, commits become savepoints).
    """
    _check_isolation(isolation)

    def postgresql_factory(request: pytest.FixtureRequest) -> Iterator[psycopg.Connection[Any]]:
        yield from _client(request, process_fixture_name, dbname, isolation_level, isolation)

    setattr(postgresql_factory, PROC_NAME_ATTRIBUTE, process_fixture_name)
    return pytest.fixture(postgresql_factory)


def _check_isolation(isolation: str | None) -> None:
    if isolation is not None and isolation not in ISOLATIONS:
        raise ValueError(
            f"isolation={isolation!r}: accepted values are {', '.join(ISOLATIONS)} "
            "(clone is the default)."
        )


def _mode(request: pytest.FixtureRequest, isolation: str | None) -> str:
    return isolation or mark_options(request.node).isolation or "clone"


def _proc_of(request: pytest.FixtureRequest, name: str) -> PostgreSQLProc:
    __tracebackhide__ = True
    proc = request.getfixturevalue(name)
    if not isinstance(proc, PostgreSQLProc):
        _fail(
            f"{request.fixturename}: {name!r} is a {type(proc).__name__}, not a fixture made "
            "by pytest_pgsandbox.postgresql.factories. Make it with postgresql_proc or "
            "postgresql_noproc from there (or turn on pg_pytest_postgresql for the default "
            "postgresql_proc)."
        )
    return proc


def _client(
    request: pytest.FixtureRequest,
    proc_name: str,
    dbname: str | None,
    isolation_level: psycopg.IsolationLevel | None,
    isolation: str | None,
) -> Iterator[psycopg.Connection[Any]]:
    __tracebackhide__ = True
    proc = _proc_of(request, proc_name)
    mode = _mode(request, isolation)
    if mode != "clone":
        for handle in database_for(request, mode, template=lambda: proc.template):
            if isolation_level is not None:
                handle.conn.isolation_level = isolation_level
            yield handle.conn
        return
    sandbox, server = proc.sandbox, proc.server
    what = "could not give the test a database of its own"
    copy = _attempt(server, what, _named_copy, request, proc, dbname)
    try:
        conn = _attempt(server, what, copy.connect, proc.options)
        if proc.identity.owner is None:
            _attempt(server, what, sandbox.become, conn)
        if isolation_level is not None:
            conn.isolation_level = isolation_level
        yield conn
    finally:
        copy.end()


def _named_copy(
    request: pytest.FixtureRequest, proc: PostgreSQLProc, dbname: str | None
) -> NamedCopy:
    """A copy of ``proc``'s template under the name the test's client fixture wants."""
    sandbox = proc.sandbox
    worker = sandbox.worker if sandbox.xdist is not None else None
    wanted = xdistify(dbname, worker) if dbname else proc.dbname
    drop_first = bool(_config.read(request.config).get("drop_test_database"))
    pool = sandbox.clone_pool(proc.template)
    return NamedCopy(_names(request), pool, proc.identity, wanted, drop_first)


def postgresql_async(
    process_fixture_name: str,
    dbname: str | None = None,
    isolation_level: psycopg.IsolationLevel | None = None,
) -> Any:
    """A function fixture for pytest-asyncio tests: a psycopg ``AsyncConnection`` to the
    test's own copy of the template (clone isolation)."""
    try:
        import pytest_asyncio
    except ImportError:

        def postgresql_async_unavailable(request: pytest.FixtureRequest) -> None:
            _async_unavailable(request)

        setattr(postgresql_async_unavailable, PROC_NAME_ATTRIBUTE, process_fixture_name)
        return pytest.fixture(postgresql_async_unavailable)

    async def postgresql_async_factory(
        request: pytest.FixtureRequest,
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        import psycopg

        proc = _proc_of(request, process_fixture_name)
        sandbox, server = proc.sandbox, proc.server
        what = "could not give the test a database of its own"
        copy = _attempt(server, what, _named_copy, request, proc, dbname)
        try:
            conn = await psycopg.AsyncConnection.connect(
                copy.info.conninfo(), options=proc.options or None
            )
        except psycopg.Error as exc:
            copy.end()
            _fail(f"{what}: {str(exc).strip()}")
        try:
            if sandbox.role is not None and proc.identity.owner is None:
                await conn.execute(sandbox.role.set_role())
                await conn.commit()
            if isolation_level is not None:
                await conn.set_isolation_level(isolation_level)
            yield conn
        finally:
            await conn.close()
            copy.end()

    setattr(postgresql_async_factory, PROC_NAME_ATTRIBUTE, process_fixture_name)
    fixture: Callable[..., Any] = pytest_asyncio.fixture(postgresql_async_factory)
    return fixture


def _async_unavailable(request: pytest.FixtureRequest) -> None:
    _fail(
        f"{request.fixturename} is an async fixture and needs pytest-asyncio: "
        "pip install pytest-asyncio, and mark the test with @pytest.mark.asyncio."
    )


__all__ = ["PortType", "postgresql", "postgresql_async", "postgresql_noproc", "postgresql_proc"]
