"""Data through migrations: a database of its own, moved through the history by the test.

A test puts rows in at one revision, moves the database on (``upgrade``/``downgrade``, through
the project's ``env.py``, as the template build does), and looks at what the migrations made
of them. The database starts at the history's base (made as the template is up to the Alembic
source), is written to and committed to freely, and is dropped afterwards: nothing shared
ever sees it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from pytest_pgsandbox._engine.templates import migration_cache
from pytest_pgsandbox._engine.templates.alembic_source import AlembicFiles
from pytest_pgsandbox._engine.templates.alembic_source import _config
from pytest_pgsandbox._engine.templates.alembic_source import logging_left_alone
from pytest_pgsandbox._engine.templates.alembic_source import what
from pytest_pgsandbox._engine.templates.guard import only_to
from pytest_pgsandbox._engine.templates.migrations import _env_url
from pytest_pgsandbox._engine.templates.revision_data import RevisionData
from pytest_pgsandbox._engine.templates.revision_data import apply
from pytest_pgsandbox._engine.templates.revision_data import where
from pytest_pgsandbox._engine.templates.template import sqlalchemy_url
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import TemplateError


class MigrationDatabase:
    """A database at the base of an Alembic history; ``upgrade`` and ``downgrade`` move it."""

    def __init__(
        self,
        admin: ConnInfo,
        info: ConnInfo,
        files: AlembicFiles,
        shown: str,
        timeout: float,
        url_env: str | None = None,
        data: RevisionData | None = None,
    ) -> None:
        self.data = data or RevisionData()
        self.admin = admin
        self.info = info
        self.files = files
        self.shown = shown
        self.timeout = timeout
        self.url_env = url_env
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def url(self) -> str:
        """The database's libpq URL (password included: for code, not for printing)."""
        return self.info.url()

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """A psycopg connection to it in autocommit mode: every statement is committed."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.info, timeout=self.timeout)
        return self._conn

    def execute(self, query: Any, params: Any = None) -> psycopg.Cursor[Any]:
        return self.conn.execute(query, params)

    def upgrade(self, revision: str = "heads") -> None:
        """``alembic upgrade REVISION`` on this database; the data spec's rows go in
        around each revision it passes (before_revision_data, at_revision_data)."""
        if self.data:
            self._upgrade_with_data(revision)
        else:
            self._command("upgrade", revision)

    def downgrade(self, revision: str) -> None:
        """``alembic downgrade REVISION`` on this database (``base`` for all the way)."""
        self._command("downgrade", revision)

    def current(self) -> set[str]:
        """The revisions its version table holds."""
        rows = self.execute("SELECT version_num FROM alembic_version").fetchall()
        return {str(r[0]) for r in rows}

    def _config(self) -> Any:
        config = _config(self.files, None, None)
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(self.info).replace("%", "%%"))
        return config

    def _command(self, name: str, revision: str) -> None:
        from alembic import command

        config = self._config()
        with only_to(self.info) as guard, logging_left_alone(), _env_url(self.url_env, self.info):
            try:
                getattr(command, name)(config, revision)
            except (Exception, SystemExit) as exc:
                text = str(guard.refused) if guard.refused else what(exc).removeprefix("raised ")
                raise TemplateError(
                    f"{self.shown}: alembic {name} {revision} failed: {text}"
                ) from None

    def _upgrade_with_data(self, revision: str) -> None:
        """``alembic upgrade`` with the data spec's items between its steps, in one run of
        env.py (as the command runs it)."""
        from alembic.runtime.environment import EnvironmentContext
        from alembic.runtime.migration import MigrationStep
        from alembic.script import ScriptDirectory

        config = self._config()
        script = ScriptDirectory.from_config(config)
        data = self.data.resolved(script, self.shown)
        step = "env.py"

        def plan(heads: Any, context: Any) -> Iterator[Any]:
            nonlocal step
            revmap = script.revision_map
            found: list[Any] = list(revmap.iterate_revisions(revision, heads, implicit_base=True))
            for rev in reversed(found):  # Script objects, as the ScriptDirectory loads them
                name = f"{rev.revision}{f' ({rev.doc})' if rev.doc else ''}"
                for item in data.before.get(rev.revision, ()):
                    step = f"{where(item)} of {data.origin} before the upgrade of {name}"
                    apply(context.connection, (item,))
                step = f"the upgrade of {name}"
                yield MigrationStep.upgrade_from_script(revmap, rev)
                for item in data.at.get(rev.revision, ()):
                    step = f"{where(item)} of {data.origin} after the upgrade of {name}"
                    apply(context.connection, (item,))

        with only_to(self.info) as guard, logging_left_alone(), _env_url(self.url_env, self.info):
            try:
                with EnvironmentContext(config, script, fn=plan, destination_rev=revision):
                    script.run_env()
            except (Exception, SystemExit) as exc:
                text = str(guard.refused) if guard.refused else what(exc).removeprefix("raised ")
                raise TemplateError(
                    f"{self.shown}: alembic upgrade {revision} failed at {step}: {text}"
                ) from None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        migration_cache.drop(self.admin, self.info.dbname, self.timeout)
