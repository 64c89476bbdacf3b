"""Public fixtures. They hold no logic of their own: the engine does the work.

- ``pg_server`` (session): the running PostgreSQL server; override it in ``conftest.py``.
- ``pg`` (function): this test's database, isolated by a transaction that is rolled back.
- ``pg_conn`` (function): ``pg.conn``, for tests that only want the psycopg connection.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import NoReturn

import pytest

from pytest_pgsandbox._engine.base import PgServer
from pytest_pgsandbox._engine.handle import PgDatabase
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.errors import ServerDied

if TYPE_CHECKING:
    import psycopg

    from pytest_pgsandbox._engine.template import PgTemplate


def _sandbox(config: pytest.Config) -> Any:
    from pytest_pgsandbox.plugin import SANDBOX_KEY

    return config.stash[SANDBOX_KEY]


def _fail(exc: BaseException | str) -> NoReturn:
    __tracebackhide__ = True
    pytest.fail(f"pgsandbox: {exc}", pytrace=False)


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
    from pytest_pgsandbox._engine.template import Source
    from pytest_pgsandbox._engine.template import TemplateSpec

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
            )
            return sandbox.build_template(pg_server, spec)  # type: ignore[no-any-return]
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
    """
    import psycopg  # already imported by the server start; here it costs nothing

    sandbox = _sandbox(request.config)
    mode = _isolation_for(request, sandbox.settings.isolation)
    if mode == "clone":
        yield from _clone(request, pg_server, pg_template, sandbox)
        return
    error: BaseException | None = None
    try:
        pg_server.check_alive()
        isolation = sandbox.isolation(pg_template)
        conn = isolation.begin()
    except (ServerDied, psycopg.OperationalError) as exc:
        error = exc
    if error is not None:
        _fail_after_error(pg_server, error, "could not start the test's transaction")
    handle = PgDatabase(conn, isolation.info)
    sandbox.current = conn
    url_env = sandbox.settings.url_env
    saved = os.environ.get(url_env) if url_env else None
    if url_env:
        os.environ[url_env] = handle.url
    try:
        yield handle
    finally:
        sandbox.current = None
        if url_env:
            if saved is None:
                os.environ.pop(url_env, None)
            else:
                os.environ[url_env] = saved
    try:
        broken = isolation.end()
    except psycopg.OperationalError as exc:
        error = exc
    if error is not None:
        _fail_after_error(pg_server, error, "could not roll the test back")
    if broken:
        pytest.fail(
            f"pgsandbox: {request.node.nodeid} sent a top-level COMMIT as SQL, which ended the "
            "transaction that isolates the test, so its changes were committed for real. The "
            "database was rebuilt so that later tests start clean. Call pg.conn.commit() "
            "instead (it is kept inside the test), or give the test a database of its own "
            'with @pytest.mark.pg(isolation="clone").',
            pytrace=False,
        )


MARK_ARGUMENTS = ("isolation",)


def _isolation_for(request: pytest.FixtureRequest, default: str) -> str:
    """The isolation of this test: its closest ``pg`` marker, else the setting."""
    __tracebackhide__ = True
    from pytest_pgsandbox.settings import ISOLATIONS

    marker = request.node.get_closest_marker("pg")
    if marker is None:
        return default
    unknown = sorted(set(marker.kwargs) - set(MARK_ARGUMENTS))
    if marker.args or unknown:
        given = ", ".join([repr(a) for a in marker.args] + unknown)
        _fail(
            f"@pytest.mark.pg got {given}, which it does not take; it takes keyword "
            f"arguments: {', '.join(MARK_ARGUMENTS)}."
        )
    mode = str(marker.kwargs.get("isolation", default))
    if mode not in ISOLATIONS:
        _fail(
            f"@pytest.mark.pg(isolation={mode!r}) on {request.node.nodeid}: accepted values "
            f"are {', '.join(ISOLATIONS)}."
        )
    return mode


def _clone(
    request: pytest.FixtureRequest,
    pg_server: PgServer,
    pg_template: PgTemplate | None,
    sandbox: Any,
) -> Iterator[PgDatabase]:
    import psycopg

    error: BaseException | None = None
    try:
        pg_server.check_alive()
        copy = sandbox.clone(pg_template)
    except (PgSandboxError, psycopg.OperationalError) as exc:
        error = exc
    if error is not None:
        _fail_after_error(pg_server, error, "could not give the test a database of its own")
    handle = PgDatabase(copy.conn, copy.info)
    sandbox.current = copy.conn
    url_env = sandbox.settings.url_env
    saved = os.environ.get(url_env) if url_env else None
    if url_env:
        os.environ[url_env] = handle.url
    try:
        yield handle
    finally:
        sandbox.current = None
        if url_env:
            if saved is None:
                os.environ.pop(url_env, None)
            else:
                os.environ[url_env] = saved
        copy.end()


def _fail_after_error(server: PgServer, exc: BaseException, what: str) -> NoReturn:
    """Fail with why the server is gone if it is, else with what the driver said."""
    __tracebackhide__ = True
    if isinstance(exc, ServerDied):
        _fail(exc)
    died: ServerDied | None = None
    try:
        server.check_alive()
    except ServerDied as gone:
        died = gone
    _fail(died or f"{what}: {str(exc).strip()}")


@pytest.fixture(scope="session")
def pg_engine(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A SQLAlchemy 2 Engine whose connections are the running test's connection.

    Inside a test that uses ``pg`` (or ``pg_session``), ``pg_engine.connect()`` works in that
    test's transaction; everything is rolled back afterwards.
    """
    from pytest_pgsandbox._engine.sqla import make_engine

    sandbox = _sandbox(request.config)

    def current() -> Any:
        if sandbox.current is None:
            raise PgSandboxError(
                "pg_engine was used outside a test that uses the pg fixture; its connections "
                "are the test's own. Add pg (or pg_session) to the test's arguments."
            )
        return sandbox.current

    try:
        engine = make_engine(current)
    except PgSandboxError as exc:
        _fail(exc)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_session(pg: PgDatabase, pg_engine: Any) -> Iterator[Any]:
    """A SQLAlchemy 2 ``Session`` in this test's transaction: ``commit()`` is a savepoint."""
    from sqlalchemy.orm import Session

    with pg_engine.connect() as connection:
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()


@pytest.fixture
def pg_conn(pg: PgDatabase) -> psycopg.Connection[Any]:
    """The psycopg connection of this test's database (``pg.conn``)."""
    return pg.conn
