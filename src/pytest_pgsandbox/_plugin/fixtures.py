"""Public fixtures. They hold no logic of their own: the engine does the work.

- ``pg_server`` (session): the running PostgreSQL server; override it in ``conftest.py``.
- ``pg`` (function): this test's database, isolated by a transaction that is rolled back.
- ``pg_conn`` (function): ``pg.conn``, for tests that only want the psycopg connection.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import NoReturn
from typing import TypeVar

import pytest

from pytest_pgsandbox._engine.handle import PgDatabase
from pytest_pgsandbox._engine.sandbox import Sandbox
from pytest_pgsandbox._engine.servers.base import PgServer
from pytest_pgsandbox._engine.servers.places import room_problem
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox._plugin.keys import FIRST_KEY
from pytest_pgsandbox._plugin.keys import HANDLE_KEY
from pytest_pgsandbox._plugin.keys import KEPT_KEY
from pytest_pgsandbox._plugin.keys import SANDBOX_KEY
from pytest_pgsandbox._plugin.sharing import RESET_FIXTURES
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.errors import ServerDied

if TYPE_CHECKING:
    import psycopg

    from pytest_pgsandbox._engine.isolation.reset import ResetDatabase
    from pytest_pgsandbox._engine.templates.template import PgTemplate


T = TypeVar("T")


def _sandbox(config: pytest.Config) -> Sandbox:

    return config.stash[SANDBOX_KEY]


def sandbox_of(request: pytest.FixtureRequest) -> Sandbox:
    """The session's sandbox (its server started on first use)."""
    request.getfixturevalue("pg_server")
    return _sandbox(request.config)


def _fail(exc: BaseException | str) -> NoReturn:
    __tracebackhide__ = True
    pytest.fail(f"pgsandbox: {mask(str(exc))}", pytrace=False)


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> PgServer:
    """The PostgreSQL server of this test session (started on first use)."""
    try:
        server: PgServer = _sandbox(request.config).ensure_server()
    except PgSandboxError as exc:
        error = exc  # reported outside the except block: no "during handling" noise
    else:
        return server
    _fail(error)


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer, request: pytest.FixtureRequest) -> PgTemplate | None:
    """The template tests' databases are copied from (None when no schema is configured).

    Built from the ``schema``, ``seed`` and ``extensions`` settings. Override it in
    ``conftest.py`` to build another one, e.g. with ``pg_build_template``.
    """
    template: PgTemplate | None = _sandbox(request.config).template
    return template


@pytest.fixture(scope="session")
def pg_build_template(
    pg_server: PgServer, request: pytest.FixtureRequest
) -> Callable[..., PgTemplate]:
    """Build (or find) a template from sources, like the settings do::

    @pytest.fixture(scope="session")
    def pg_template(pg_build_template):
        return pg_build_template(schema=["sql:db/schema.sql"], seed=["callable:db.seed:run"])
    """
    from pytest_pgsandbox._engine.templates.template import Source
    from pytest_pgsandbox._engine.templates.template import TemplateSpec

    sandbox = _sandbox(request.config)

    def build(
        schema: Sequence[str] = (), seed: Sequence[str] = (), extensions: Sequence[str] = ()
    ) -> PgTemplate:
        __tracebackhide__ = True
        try:
            spec = TemplateSpec(
                schema=tuple(Source(*s.split(":", 1)) for s in schema),
                seed=tuple(Source(*s.split(":", 1)) for s in seed),
                extensions=tuple(extensions),
                base=request.config.rootpath,
                scenarios_dir=sandbox.settings.scenarios_dir,
            )
            return sandbox.build_template(pg_server, spec)
        except PgSandboxError as exc:
            error = exc
        _fail(error)

    return build


@pytest.fixture
def pg(
    request: pytest.FixtureRequest, pg_server: PgServer, pg_template: PgTemplate | None
) -> Iterator[PgDatabase]:
    """This test's database, isolated as the ``isolation`` setting or ``pg`` marker says.

    - transaction (default): everything the test does is rolled back afterwards; commits
      through ``pg.conn`` become savepoints.
    - clone: a database of the test's own, copied from the template; any code may use it
      through ``pg.url`` and commit; it is dropped afterwards.
    - reset: the worker's database, which any code may use through ``pg.url`` and commit to;
      afterwards the tables the test wrote to are put back as the template has them.
    """
    sandbox = _sandbox(request.config)
    isolation = mark_options(request.node).isolation
    if isolation is None:
        isolation = sandbox.settings.isolation
        if isolation == "transaction" and RESET_FIXTURES & set(request.fixturenames):
            isolation = "reset"  # shared with postgresql_db, which needs commits to work
    yield from database_for(request, isolation, "pg")


def _template_for(
    request: pytest.FixtureRequest, sandbox: Sandbox, pg_template: PgTemplate | None
) -> PgTemplate | None:
    """The template of this test: its scenario's (``pg`` marker), else ``pg_template``."""
    __tracebackhide__ = True
    from pytest_pgsandbox.errors import ScenarioError

    name = mark_options(request.node).scenario
    if name is None:
        return pg_template
    try:
        template: PgTemplate = sandbox.scenario_template(pg_template, name)
    except PgSandboxError as exc:
        error = exc
    else:
        return template
    first = sandbox.scenario_failed_in.setdefault(name, request.node.nodeid)
    if first != request.node.nodeid and isinstance(error, ScenarioError):
        _fail(f"scenario {name!r} could not be loaded; the reason is in the report of {first}.")
    _fail(error)


def database_for(
    request: pytest.FixtureRequest,
    mode: str,
    fixture: str = "pg",
    template: Callable[[], PgTemplate | None] | None = None,
) -> Iterator[PgDatabase]:
    """The test's database under isolation ``mode``: yields it once, then cleans up.

    A second database fixture of the same test gets the same database when its isolation
    suits (the same, or transaction over a reset database); ``fixture`` names the asker.
    ``template``: where the test's template comes from instead of ``pg_template`` (a
    scenario marker still builds on top of it).
    """
    __tracebackhide__ = True
    pg_server: PgServer = request.getfixturevalue("pg_server")
    sandbox = _sandbox(request.config)
    base = template() if template else request.getfixturevalue("pg_template")
    pg_template = _template_for(request, sandbox, base)
    handle = sandbox.current_handle
    if handle is not None:
        first = request.node.stash.get(FIRST_KEY, None)
        ours = request.node.stash.get(HANDLE_KEY, None) is handle
        if ours and (
            handle.isolation == mode
            or (mode, handle.isolation)
            == (
                "transaction",
                "reset",
            )
        ):
            yield handle  # the first fixture's; it cleans up
            return
        asked = first or "another database fixture"
        _fail(
            f"{request.node.nodeid} asks for {asked} ({handle.isolation} isolation) and "
            f"{fixture} ({mode} isolation): one test has one database, and these cannot "
            f"share it. Give the test one isolation with @pytest.mark.pg(isolation="
            '"reset"), under which every database fixture shares the database, or use one '
            "fixture (postgresql_db has pg's helpers; pg.conn is the connection)."
        )
    request.node.stash[FIRST_KEY] = fixture
    if mode == "clone":
        yield from _clone(request, pg_server, pg_template, sandbox)
    elif mode == "reset":
        yield from _reset(request, pg_server, pg_template, sandbox)
    else:
        yield from _transaction(request, pg_server, pg_template, sandbox)


def _transaction(
    request: pytest.FixtureRequest,
    pg_server: PgServer,
    pg_template: PgTemplate | None,
    sandbox: Sandbox,
) -> Iterator[PgDatabase]:
    isolation = _attempt(
        pg_server, "could not start the test's transaction", sandbox.isolation, pg_template
    )

    def begin() -> psycopg.Connection[Any]:
        # When the test first uses pg.conn (or a helper): a test that only uses another
        # driver's connection (the async fixtures have their own) saves two round trips.
        return _attempt(pg_server, "could not start the test's transaction", isolation.begin)

    def restart() -> psycopg.Connection[Any]:
        isolation.end()
        return isolation.begin()

    handle = PgDatabase(
        begin,
        sandbox.tester(isolation.info),
        "transaction",
        restart,
        _baseline(sandbox, pg_template),
        admin=isolation.info,
        local_role=sandbox.local_role,
        committed=lambda: handle.conn_used and isolation.committed(),
    )
    verify = sandbox.settings.verify_isolation
    if verify and not sandbox.has_picture(handle.info.dbname):
        # The picture of the database before any test, taken on a connection of its own:
        # locks taken in the test's transaction (sequences keep theirs to its end) would
        # hold up DDL from the test's other connections.
        sandbox.verify(handle.info, None)
    with _serving(request, sandbox, handle, handle.info.url()):
        yield handle
    # Not begun: nothing to roll back, but a server that died during the test is still
    # reported by this test (the look is cheap), not by the next one.
    end = isolation.end if handle.conn_used else _nothing
    broken = _attempt(pg_server, "could not roll the test back", end)
    if broken and not handle.commit_reported:
        pytest.fail(
            f"pgsandbox: {request.node.nodeid} sent a top-level COMMIT as SQL, which ended the "
            "transaction that isolates the test, so its changes were committed for real. The "
            "database was rebuilt so that later tests start clean. Call pg.conn.commit() "
            "instead (it is kept inside the test), or give the test a database of its own "
            'with @pytest.mark.pg(isolation="clone").',
            pytrace=False,
        )
    if verify:
        leaks = sandbox.verify(handle.info, isolation.connection)
        if leaks:
            sandbox.repair(handle.info.dbname, pg_template)
            isolation.close()
            _leaked(request, leaks, "rolled back")


def _nothing() -> None:
    return None


def _reset(
    request: pytest.FixtureRequest,
    pg_server: PgServer,
    pg_template: PgTemplate | None,
    sandbox: Sandbox,
) -> Iterator[PgDatabase]:
    what = "could not prepare the worker's reset database"
    db = _attempt(pg_server, what, sandbox.reset, pg_template)
    conn = _attempt(pg_server, what, db.begin)

    def restart() -> psycopg.Connection[Any]:
        db.end()
        fresh = db.begin()
        sandbox.become(fresh)
        return fresh

    info = sandbox.tester(db.info)
    baseline = _baseline(sandbox, pg_template)
    handle = PgDatabase(conn, info, "reset", restart, baseline, db.info, sandbox.local_role)
    verify = sandbox.settings.verify_isolation
    if verify:
        sandbox.verify(handle.info, conn)
    _attempt(pg_server, what, sandbox.become, conn)
    with _serving(request, sandbox, handle, handle.url):
        yield handle
    what = "could not put the reset database back"
    if _attempt(pg_server, what, _keep, request, sandbox, handle, db) is None:
        _attempt(pg_server, what, db.end)
    if verify:
        leaks = sandbox.verify(handle.info, db.conn)
        if leaks:
            db.swap()
            _leaked(request, leaks, "reset")


def _clone(
    request: pytest.FixtureRequest,
    pg_server: PgServer,
    pg_template: PgTemplate | None,
    sandbox: Sandbox,
) -> Iterator[PgDatabase]:
    what = "could not give the test a database of its own"
    copy = _attempt(pg_server, what, sandbox.clone, pg_template)
    _attempt(pg_server, what, sandbox.become, copy.conn)
    info = sandbox.tester(copy.info)
    baseline = _baseline(sandbox, pg_template)
    handle = PgDatabase(copy.conn, info, "clone", None, baseline, copy.info, sandbox.local_role)
    check = None
    if sandbox.settings.verify_isolation:
        # A copy handed on after a test (recycled) must not differ from a fresh one.
        key = f"clone {copy.pool.template}"
        if copy.fresh and not sandbox.has_picture(key):
            sandbox.verify(copy.info, copy.conn, key)
        if sandbox.has_picture(key):

            def check(conn: psycopg.Connection[Any]) -> list[str]:
                return sandbox.verify(copy.info, conn, key)

    with _serving(request, sandbox, handle, handle.url):
        yield handle
    kept: list[ConnInfo | None] = [None]
    leaks: list[str] = []
    try:
        kept[0] = _attempt(
            pg_server, "could not keep the test's database", _keep, request, sandbox, handle, None
        )
    finally:
        leaks = copy.end(give_back=kept[0] is None, check=check)
    if leaks:
        _leaked(request, leaks, "put back for the next test")


def _baseline(sandbox: Sandbox, template: PgTemplate | None) -> Callable[[], str]:
    return lambda: str(sandbox.catalog_baseline(template))


@dataclass(frozen=True)
class MarkOptions:
    """What ``@pytest.mark.pg(...)`` says for a test: on the test, its class or its module
    (each argument from the closest marker that gives it)."""

    isolation: str | None = None
    scenario: str | None = None


MARK_ARGUMENTS = tuple(f.name for f in fields(MarkOptions))


def mark_options(node: pytest.Item) -> MarkOptions:
    """The ``pg`` markers of ``node``, checked: unknown arguments and values are errors."""
    __tracebackhide__ = True
    from pytest_pgsandbox.settings import ISOLATIONS

    found: dict[str, str] = {}
    for marker in node.iter_markers("pg"):  # closest first
        unknown = sorted(set(marker.kwargs) - set(MARK_ARGUMENTS))
        if marker.args or unknown:
            given = ", ".join([repr(a) for a in marker.args] + unknown)
            _fail(
                f"@pytest.mark.pg got {given}, which it does not take; it takes keyword "
                f"arguments: {', '.join(MARK_ARGUMENTS)}."
            )
        for key, value in marker.kwargs.items():
            found.setdefault(key, value)
    options = MarkOptions(**found)
    if options.isolation is not None and options.isolation not in ISOLATIONS:
        _fail(
            f"@pytest.mark.pg(isolation={options.isolation!r}) on {node.nodeid}: accepted "
            f"values are {', '.join(ISOLATIONS)}."
        )
    if options.scenario is not None and not isinstance(options.scenario, str):
        _fail(
            f"@pytest.mark.pg(scenario={options.scenario!r}) on {node.nodeid}: give the "
            "scenario's name, e.g. scenario='billing/pro'."
        )
    return options


def _isolation_for(request: pytest.FixtureRequest, default: str) -> str:
    """The isolation of this test: its closest ``pg`` marker, else the setting."""
    __tracebackhide__ = True
    return mark_options(request.node).isolation or default


@contextlib.contextmanager
def _serving(
    request: pytest.FixtureRequest, sandbox: Sandbox, handle: PgDatabase, url: str
) -> Iterator[None]:
    """While the test runs: its connection is current, ``url_env`` holds its URL."""
    sandbox.current_handle = handle
    request.node.stash[HANDLE_KEY] = handle
    url_env = sandbox.settings.url_env
    saved = os.environ.get(url_env) if url_env else None
    if url_env:
        os.environ[url_env] = url
    try:
        yield
    finally:
        for close in sandbox.engines_to_close:  # pg_engine's own connections
            close()
        handle.close_time()
        pg2, sandbox.current_pg2 = sandbox.current_pg2, None
        sandbox.current_handle = None
        if pg2 is not None:
            pg2.close()
        if url_env:
            if saved is None:
                os.environ.pop(url_env, None)
            else:
                os.environ[url_env] = saved


def _keep(
    request: pytest.FixtureRequest,
    sandbox: Sandbox,
    handle: PgDatabase,
    reset: ResetDatabase | None,
) -> ConnInfo | None:
    """Keep the test's database if the keep setting says so; where it is now, or None."""
    keep = sandbox.settings.keep
    if keep == "never":
        return None
    name = request.node.stash.get(KEPT_KEY, None)
    if keep == "failed" and name is None:
        return None
    info: ConnInfo = sandbox.keep(handle.info, request.node.nodeid, reset, name)
    return info


def _leaked(request: pytest.FixtureRequest, leaks: list[str], how: str) -> NoReturn:
    __tracebackhide__ = True
    shown = leaks[:20] + ([f"... and {len(leaks) - 20} more"] if len(leaks) > 20 else [])
    _fail(
        f"{request.node.nodeid} leaked: after it was {how}, its database differs from the "
        "template:\n  " + "\n  ".join(shown) + "\nThe database was replaced with a clean "
        "copy. Changes that outlive a test come from connections isolation cannot see "
        '(use isolation="clone" or "reset" for code that opens its own) or from objects '
        "outside the database (roles, settings)."
    )


def _attempt(server: PgServer, what: str, step: Callable[..., T], *args: Any) -> T:
    """``step(*args)``; a database error fails the test with ``what`` and the reason."""
    __tracebackhide__ = True
    import psycopg  # already imported by the server start; here it costs nothing

    try:
        server.check_alive()
        return step(*args)
    except (PgSandboxError, psycopg.Error) as exc:
        error = exc  # reported outside the except block: no "during handling" noise
    return _fail_after_error(server, error, what)


def _fail_after_error(server: PgServer, exc: BaseException, what: str) -> NoReturn:
    """Fail with why the server is gone if it is, else with what the driver said.

    A dead server is explained in full once, by the first test that meets it; every later
    test fails at once with one line that points there.
    """
    __tracebackhide__ = True
    died: ServerDied | None = exc if isinstance(exc, ServerDied) else None
    if died is None:
        try:
            server.check_alive(recheck=True)
        except ServerDied as gone:
            died = gone
    if died is None:
        # A server whose disk is full says only that it is "not yet accepting connections"
        # (it is replaying its write-ahead log) or that it could not write: say why.
        folder = getattr(server, "folder", None)
        room = room_problem(folder) if isinstance(folder, Path) else ""
        _fail(f"{what}: {str(exc).strip()}" + (f"\n  {room}" if room else ""))
    here = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0] or "an earlier test"
    first = died.reported_in or _first_to_report(server, here)
    if first is None:
        died.reported_in = here
        _fail(died)
    died.reported_in = first
    if first == here:  # its call met it, now its teardown: said in full once is enough
        _fail("the PostgreSQL server is gone; why is in this test's first report, above.")
    _fail(f"the PostgreSQL server is gone; why is in the report of {first}.")


def _first_to_report(server: PgServer, here: str) -> str | None:
    """Which test of another xdist worker explained the death of the run's shared local
    server already, or None if ``here`` is the first: one report in full per run."""
    folder = getattr(server, "folder", None)
    if not isinstance(folder, Path):
        return None
    mark = folder / "death-reported"  # in the server's folder: gone with it
    try:
        fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with contextlib.suppress(OSError):
            return mark.read_text() or "another worker's test"
        return "another worker's test"
    except OSError:
        return None  # the folder is gone or closed to us: say it here
    with os.fdopen(fd, "w") as f:
        f.write(here)
    return None


@pytest.fixture(scope="session")
def _pg_test_engine(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A SQLAlchemy 2 Engine whose connection is always the running test's connection (under
    every isolation): what ``pg_session`` and the pytest-pgsql fixtures run on."""
    from pytest_pgsandbox._engine.drivers.sqla import make_engine

    sandbox = _sandbox(request.config)
    driver = sandbox.settings.driver
    try:
        _require_driver(driver)
        engine = make_engine(lambda: _test_connection(sandbox, driver), driver)
    except PgSandboxError as exc:
        _fail(exc)
    engine._pgsb_test_engine = True  # its connection is the test's: helpers use it directly
    engine._pgsb_current = lambda: sandbox.current_handle  # and so is its clock
    yield engine
    engine.dispose()


def _require_driver(driver: str) -> None:
    if driver == "psycopg2":
        from pytest_pgsandbox._engine.drivers.pg2 import require_psycopg2

        require_psycopg2()


def _test_connection(sandbox: Sandbox, driver: str) -> Any:
    """The running test's own connection, through ``driver``."""
    if sandbox.current is None:
        raise PgSandboxError(
            "pg_engine was used outside a test that uses the pg fixture; its connections "
            "are the test's own. Add pg (or pg_session) to the test's arguments."
        )
    if driver == "psycopg2":
        if sandbox.current_pg2 is None:
            from pytest_pgsandbox._engine.drivers.pg2 import Psycopg2Connection

            info, isolated, set_role = sandbox.current_handle.driver_target()
            sandbox.current_pg2 = Psycopg2Connection(
                info, isolated, sandbox.settings.start_timeout, set_role=set_role
            )
        return sandbox.current_pg2.conn
    return sandbox.current


@pytest.fixture(scope="session")
def pg_engine(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A SQLAlchemy 2 Engine on the running test's database.

    Under transaction isolation every connection is the test's one connection, inside its
    transaction (all rolled back afterwards): two sessions on it see each other's uncommitted
    rows, and one's rollback or ``close()`` can undo the other's work. Under reset and clone
    isolation each checkout is a real connection of the engine's own on the test's database,
    closed on check-in (and all closed after the test): two sessions behave as two clients.
    """
    from pytest_pgsandbox._engine.drivers.sqla import make_own_engine
    from pytest_pgsandbox._engine.urls import connect

    sandbox = _sandbox(request.config)
    driver = sandbox.settings.driver
    timeout = sandbox.settings.start_timeout

    def connection() -> tuple[Any, bool]:
        handle = sandbox.current_handle
        if handle is None or handle.isolation == "transaction":
            return _test_connection(sandbox, driver), True
        info = handle.driver_target()[0]
        if driver == "psycopg2":
            from pytest_pgsandbox._engine.drivers.pg2 import require_psycopg2

            return require_psycopg2().connect(
                info.conninfo(), connect_timeout=max(1, round(timeout))
            ), False
        return connect(info, autocommit=False, timeout=timeout), False

    try:
        _require_driver(driver)
        engine = make_own_engine(connection, driver)
    except PgSandboxError as exc:
        _fail(exc)
    engine._pgsb_current = lambda: sandbox.current_handle  # its clock is the test database's
    sandbox.engines_to_close.append(engine._pgsb_close_all)
    yield engine
    engine._pgsb_close_all()
    engine.dispose()


@pytest.fixture
def pg_session(pg: PgDatabase, _pg_test_engine: Any) -> Iterator[Any]:
    """A SQLAlchemy 2 ``Session`` on this test's connection.

    Under transaction isolation ``commit()`` is a savepoint; under clone and reset it
    commits for real, so code on ``pg.url`` sees the rows. With SQLModel installed it is a
    ``sqlmodel.Session`` (``session.exec(select(Model))`` works).
    """
    from pytest_pgsandbox._engine.drivers.sqla import session_class

    Session = session_class()

    with _pg_test_engine.connect() as connection:
        if pg.isolation == "transaction":
            session = Session(bind=connection, join_transaction_mode="create_savepoint")
        else:
            session = Session(bind=connection)
        try:
            yield session
        finally:
            if pg.isolation == "transaction":
                # The test's rollback undoes all it did: the session lets go of its connection
                # without rolling back its savepoint and the connection first (two round trips).
                session.invalidate()
            else:
                session.close()


@pytest.fixture
def pg_conn(pg: PgDatabase) -> psycopg.Connection[Any]:
    """The psycopg connection of this test's database (``pg.conn``)."""
    return pg.conn
