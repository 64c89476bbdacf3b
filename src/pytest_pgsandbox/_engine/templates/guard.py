"""While a template is built, nothing may connect anywhere but the template.

An Alembic ``env.py`` (or a seed) that takes its URL from the application's settings would
otherwise migrate *that* database, a developer's real one, and leave the template empty.
:func:`only_to` refuses, before a single statement can run, every connection made on the
building thread to another server or database:

- SQLAlchemy engines, whatever their driver (a ``do_connect`` event on every engine);
- psycopg 3 (``psycopg.connect``, ``Connection.connect``, ``AsyncConnection.connect``), psycopg2
  (``psycopg2.connect``) and asyncpg (``asyncpg.connect``), as far as code reaches them
  through those names.

Connections made on other threads (our own background work) are left alone. The first
refusal is remembered, so the build fails with it even if the user's code caught the error.

One kind is redirected instead of refused: a connection to a database of our own that
applications were pointed at (the ``env`` setting's), made while its template is built. An
application whose settings object was created when ``conftest.py`` imported it names that
database, and its ``env.py`` or seed means the template: the connection goes there.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox.errors import TemplateError

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class ForeignConnection(TemplateError):
    """A connection to another database while the template was being built."""


# Our own databases that stand for the template while one is built (see the docstring).
_STAND_INS: list[ConnInfo] = []


def stand_in_for_templates(info: ConnInfo) -> None:
    """Connections made to ``info`` during template builds go to the template instead.

    Only for a database pgsandbox made for the session and pointed applications at."""
    if not any(_same_place(_params(known), info) for known in _STAND_INS):
        _STAND_INS.append(info)


def _params(info: ConnInfo) -> dict[str, Any]:
    return {"host": info.host, "port": info.port, "dbname": info.dbname}


@dataclass
class Guard:
    """What :func:`only_to` allows, and the first connection it refused."""

    allowed: ConnInfo
    thread: int = field(default_factory=threading.get_ident)
    refused: ForeignConnection | None = None
    redirected: list[str] = field(default_factory=list)  # what went to the template instead
    # Ends each redirected connection when the build is over: an application's pooled
    # engine must not keep one to the template (nor hand it to a test later).
    closers: list[Callable[[], None]] = field(default_factory=list)
    fix: str = (
        "Fix: let env.py use the URL Alembic is given, e.g. "
        '`url = config.get_main_option("sqlalchemy.url")` (pgsandbox sets it), '
        "or set pg_url_env to the variable your settings read (e.g. DATABASE_URL) so "
        "that it holds the template's URL while the template is built."
    )

    def check(self, params: Mapping[str, Any], shown: str) -> str | None:
        """Raise (and remember) a refusal unless ``params`` reach the template.

        Returns the database to connect to instead (the template's) when ``params`` name one
        of our stand-ins, else None: connect as asked."""
        if threading.get_ident() != self.thread or _same_place(params, self.allowed):
            return None
        if any(_same_place(params, stand_in) for stand_in in _STAND_INS):
            self.redirected.append(shown)
            for seen in _REDIRECTS:
                if shown not in seen:
                    seen.append(shown)
            return self.allowed.dbname
        self.refuse(shown)
        return None  # not reached: refuse raises

    def refuse(self, shown: str) -> None:
        error = ForeignConnection(
            f"while the template was being built, code it ran tried to connect to {shown}, "
            "which is not the template database; pgsandbox refused the connection before "
            "any statement ran, so nothing was written there.\n"
            "Such a URL usually comes from the application's own settings read by env.py "
            "or a seed (DATABASE_URL in the environment or a .env file, "
            "settings.SQLALCHEMY_DATABASE_URI, an app config).\n" + self.fix
        )
        if self.refused is None:
            self.refused = error
        raise error


def _norm_host(host: object) -> str:
    text = str(host or os.environ.get("PGHOST") or "/var/run/postgresql").split(",")[0]
    if text.startswith("/"):
        return os.path.realpath(text)
    text = text.strip("[]").lower()
    return "loopback" if text in _LOOPBACK else text


def _same_place(params: Mapping[str, Any], allowed: ConnInfo) -> bool:
    dbname = params.get("dbname") or params.get("database")
    port = params.get("port") or os.environ.get("PGPORT") or 5432
    try:
        port_number = int(str(port).split(",")[0])
    except ValueError:
        return False
    return (
        _norm_host(params.get("host")) == _norm_host(allowed.host)
        and port_number == allowed.port
        and dbname == allowed.dbname
    )


def _shown(params: Mapping[str, Any], driver: str = "postgresql") -> str:
    host = params.get("host") or ""
    port = params.get("port") or ""
    user = params.get("user") or ""
    password = ":***" if params.get("password") else ""
    dbname = params.get("dbname") or params.get("database") or ""
    where = f"{host}:{port}" if port else str(host)
    if str(host).startswith("/"):  # a socket folder, as libpq takes it in a URL
        return f"{driver}://{user}{password}@/{dbname}?host={host}"
    return f"{driver}://{user}{password}{'@' if user else ''}{where}/{dbname}"


# Open ``redirects()`` lists: each gets every place a connection was redirected from.
_REDIRECTS: list[list[str]] = []


@contextlib.contextmanager
def redirects() -> Iterator[list[str]]:
    """The places (passwords masked) whose connections went to the template instead, while
    inside: for the report."""
    seen: list[str] = []
    _REDIRECTS.append(seen)
    try:
        yield seen
    finally:
        _REDIRECTS.remove(seen)


@contextlib.contextmanager
def only_to(allowed: ConnInfo, fix: str | None = None) -> Iterator[Guard]:
    """Refuse connections made on this thread to anything but ``allowed`` while inside.

    ``fix``: what the refusal tells the user to do, when the default (about env.py) does
    not fit the source."""
    guard = Guard(allowed) if fix is None else Guard(allowed, fix=fix)
    undo: list[Callable[[], None]] = []
    try:
        _guard_sqlalchemy(guard, undo)
        _guard_psycopg(guard, undo)
        _guard_psycopg2(guard, undo)
        _guard_asyncpg(guard, undo)
        yield guard
    finally:
        for step in reversed(undo):
            step()
        for close in guard.closers:
            with contextlib.suppress(Exception):  # already closed, or its loop is gone
                close()


def _guard_sqlalchemy(guard: Guard, undo: list[Callable[[], None]]) -> None:
    if "sqlalchemy" not in sys.modules:
        with contextlib.suppress(ImportError):
            import sqlalchemy  # noqa: F401 - env.py will import it: catch its engines too
    if "sqlalchemy" not in sys.modules:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def do_connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        if dialect.name != "postgresql":
            if threading.get_ident() == guard.thread:
                guard.refuse(f"a {dialect.name} database ({mask(str(cargs[0]) if cargs else '')})")
            return
        params = dict(cparams)
        if cargs and isinstance(cargs[0], str) and "=" in cargs[0]:
            from psycopg.conninfo import conninfo_to_dict

            with contextlib.suppress(Exception):
                params = {**conninfo_to_dict(cargs[0]), **params}
        instead = guard.check(params, mask(_shown(params)))
        if instead is not None:  # asyncpg's dialect says "database", the others "dbname"
            cparams["database" if "database" in cparams else "dbname"] = instead
            guard.closers.append(record.invalidate)  # the pool makes a new one next time

    event.listen(Engine, "do_connect", do_connect)
    undo.append(lambda: event.remove(Engine, "do_connect", do_connect))


def _guard_psycopg(guard: Guard, undo: list[Callable[[], None]]) -> None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    for cls in (psycopg.Connection, psycopg.AsyncConnection):
        original = cls.__dict__["connect"]
        func = original.__func__

        def make(func: Any) -> Any:
            def connect(klass: Any, /, conninfo: str = "", **kwargs: Any) -> Any:
                params = conninfo_to_dict(conninfo, **kwargs)
                instead = guard.check(params, mask(_shown(params)))
                if instead is None:
                    return func(klass, conninfo, **kwargs)
                made = func(klass, conninfo, **{**kwargs, "dbname": instead})
                if not isinstance(made, psycopg.Connection):  # AsyncConnection.connect
                    return _closing_when_made(made, guard)
                guard.closers.append(made.close)
                return made

            return classmethod(connect)

        setattr(cls, "connect", make(func))  # noqa: B010
        undo.append(functools.partial(setattr, cls, "connect", original))
    # psycopg.connect is Connection.connect, bound when psycopg was imported.
    module_connect = psycopg.connect
    psycopg.connect = psycopg.Connection.connect
    undo.append(functools.partial(setattr, psycopg, "connect", module_connect))


async def _closing_when_made(pending: Any, guard: Guard) -> Any:
    made = await pending
    guard.closers.append(lambda: made.pgconn.finish())  # no loop needed
    return made


def _guard_psycopg2(guard: Guard, undo: list[Callable[[], None]]) -> None:
    module: Any = sys.modules.get("psycopg2")
    if module is None:
        return
    original = module.connect

    def connect(dsn: str | None = None, *args: Any, **kwargs: Any) -> Any:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn or "", **{k: v for k, v in kwargs.items() if v})
        instead = guard.check(params, mask(_shown(params)))
        if instead is None:
            return original(dsn, *args, **kwargs)
        kwargs = {**{k: v for k, v in kwargs.items() if k != "database"}, "dbname": instead}
        made = original(dsn, *args, **kwargs)
        guard.closers.append(made.close)
        return made

    module.connect = connect
    undo.append(lambda: setattr(module, "connect", original))


def _guard_asyncpg(guard: Guard, undo: list[Callable[[], None]]) -> None:
    module: Any = sys.modules.get("asyncpg")
    if module is None:
        return
    original = module.connect

    async def connect(dsn: str | None = None, **kwargs: Any) -> Any:
        from psycopg.conninfo import conninfo_to_dict

        params: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            params = conninfo_to_dict(dsn or "")
        for key in ("host", "port", "user", "password", "database"):
            if kwargs.get(key):
                params[key] = kwargs[key]
        instead = guard.check(params, mask(_shown(params)))
        if instead is None:
            return await original(dsn, **kwargs)
        made = await original(dsn, **{**kwargs, "database": instead})
        guard.closers.append(made.terminate)  # close() needs the loop, which may be gone
        return made

    module.connect = connect
    undo.append(lambda: setattr(module, "connect", original))
