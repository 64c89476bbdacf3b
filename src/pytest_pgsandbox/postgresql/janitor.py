"""``DatabaseJanitor``: pytest-postgresql's hand-made databases, on databases it labels.

It creates a database (optionally a copy of a template, optionally a template itself) and
drops it again: as a context manager, or with ``init()`` and ``drop()``. What it creates
carries pgsandbox's label, and it drops only labelled databases: a database of the same name
that someone else made is left alone, with an error that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from psycopg import sql

from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox.errors import UnsafeOperation
from pytest_pgsandbox.postgresql import _load


class DatabaseJanitor:
    """Create, load and drop one database (pytest-postgresql's arguments)."""

    def __init__(
        self,
        *,
        user: str,
        host: str,
        port: str | int,
        version: Any = None,
        dbname: str,
        template_dbname: str | None = None,
        maintenance_dbname: str = "postgres",
        as_template: bool = False,
        password: str | None = None,
        isolation_level: Any = None,
        autocommit: bool = False,
        connection_timeout: int = 60,
    ) -> None:
        from packaging.version import Version
        from packaging.version import parse

        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.dbname = dbname
        self.template_dbname = template_dbname
        self.maintenance_dbname = maintenance_dbname
        self.as_template = as_template
        self.isolation_level = isolation_level
        self.autocommit = autocommit
        self._connection_timeout = connection_timeout
        self.version = (
            version if isinstance(version, Version) or version is None else parse(str(version))
        )

    def is_template(self) -> bool:
        return self.as_template

    def _info(self, dbname: str | None = None) -> ConnInfo:
        return ConnInfo(
            host=self.host,
            port=int(self.port),
            user=self.user,
            password=self.password,
            dbname=dbname or self.maintenance_dbname,
        )

    def init(self) -> None:
        """Create the database, labelled as pgsandbox's (a copy of ``template_dbname``)."""
        with self.cursor() as cur:
            conn = cur.connection
            provision.create_database(
                conn,
                self.dbname,
                {"kind": "janitor", "template": self.template_dbname},
                self.template_dbname,
            )
            if self.as_template:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(
                        sql.Identifier(self.dbname)
                    )
                )

    def drop(self) -> None:
        """Drop the database if it exists (its sessions are ended first).

        Raises ``UnsafeOperation`` for a database without pgsandbox's label: it was not made
        by a janitor or the plugin, and is left as it is.
        """
        with self.cursor() as cur:
            conn = cur.connection
            if not provision.exists(conn, self.dbname):
                return
            if provision.database_label(conn, self.dbname) is None:
                raise UnsafeOperation(
                    f"DatabaseJanitor refuses to drop database {self.dbname!r}: it has no "
                    "pgsandbox label, so neither a janitor nor the plugin created it. Nothing "
                    "was changed; drop it by hand if it really is a leftover."
                )
            provision.drop_database(conn, self.dbname)

    def load(self, load: _load.LoadItem) -> None:
        """Load a ``.sql`` file (a ``Path``), an import path or a callable into the database."""
        loader = _load.resolve(load, Path.cwd())
        loader.run(self._info(self.dbname), self.autocommit, float(self._connection_timeout))

    @contextlib.contextmanager
    def cursor(self, dbname: str | None = None) -> Iterator[Any]:
        """An autocommit cursor on ``dbname`` (the maintenance database by default), retried
        until ``connection_timeout``; then ``TimeoutError``, caused by the last failure."""
        import psycopg

        info = self._info(dbname)
        deadline = time.monotonic() + self._connection_timeout
        delay = 0.05
        while True:
            try:
                conn = psycopg.connect(info.conninfo(), connect_timeout=2)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() + delay >= deadline:
                    raise TimeoutError(
                        f"could not connect to database {info.dbname!r} on "
                        f"{info.host}:{info.port} as {info.user!r} within "
                        f"{self._connection_timeout} s"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            if self.isolation_level is not None:
                conn.isolation_level = self.isolation_level
            conn.autocommit = True
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def __enter__(self) -> DatabaseJanitor:
        self.init()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.drop()


class AsyncDatabaseJanitor:
    """``DatabaseJanitor`` for async code: the same arguments and labels, awaited."""

    def __init__(self, **kwargs: Any) -> None:
        self._janitor = DatabaseJanitor(**kwargs)

    def __getattr__(self, name: str) -> Any:  # user, host, port, dbname, ... as given
        return getattr(self._janitor, name)

    def is_template(self) -> bool:
        return self._janitor.is_template()

    async def init(self) -> None:
        await asyncio.to_thread(self._janitor.init)

    async def drop(self) -> None:
        await asyncio.to_thread(self._janitor.drop)

    async def load(self, load: _load.LoadItem) -> None:
        await asyncio.to_thread(self._janitor.load, load)

    @contextlib.asynccontextmanager
    async def cursor(self, dbname: str | None = None) -> AsyncIterator[Any]:
        """An autocommit async cursor on ``dbname`` (the maintenance database by default)."""
        import psycopg

        janitor = self._janitor
        info = janitor._info(dbname)
        deadline = time.monotonic() + janitor._connection_timeout
        delay = 0.05
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    info.conninfo(), connect_timeout=2, autocommit=True
                )
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() + delay >= deadline:
                    raise TimeoutError(
                        f"could not connect to database {info.dbname!r} on "
                        f"{info.host}:{info.port} as {info.user!r} within "
                        f"{janitor._connection_timeout} s"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            async with conn.cursor() as cur:
                yield cur
        finally:
            await conn.close()

    async def __aenter__(self) -> AsyncDatabaseJanitor:
        await self.init()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.drop()
