"""The migration checks as test items: ``alembic:alembic.ini::single_head`` and the rest.

With ``check_migrations`` on, every ``alembic:`` schema source gets one item per check at
the start of the session. Each is an ordinary item: shown in the report, selected with ``-k``,
deselected with ``--deselect``. The engine (``templates.migration_cache``) runs the checks
the session selected, once, and keeps those that pass for the template's hash; a cached
pass is reported as ``PASSED for <hash>, cached``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pytest

from pytest_pgsandbox._engine.templates.migrations import CHECKS
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox._plugin.keys import SANDBOX_KEY
from pytest_pgsandbox._plugin.keys import SETTINGS_KEY
from pytest_pgsandbox.errors import PgSandboxError

if TYPE_CHECKING:
    from pytest_pgsandbox._engine.templates.migration_data import MigrationDatabase
    from pytest_pgsandbox._engine.templates.revision_data import RevisionData

PROPERTY = "pgsandbox_migrations"  # the user property that carries "for <hash>, cached"

WHAT = {
    "single_head": "the history has one head",
    "upgrade": "every revision upgrades, base to head",
    "up_down": "every downgrade runs, head to base, and the history upgrades again",
    "downgrade_leaves_no_trace": "after each downgrade the catalog is as before its upgrade",
    "models_match": "the models (target_metadata) match what the migrations build",
}


class MigrationCheckFailed(Exception):
    """A migration check found a problem; its message says which and where."""


DATA_KEY = pytest.StashKey["RevisionData | PgSandboxError"]()


def revision_data(config: pytest.Config) -> RevisionData:
    """The project's ``pytest_pgsandbox_migration_data`` (asked once per session); a
    spec of the wrong shape raises, naming what is wrong."""
    from pytest_pgsandbox._engine.templates.revision_data import parse

    found = config.stash.get(DATA_KEY, None)
    if found is None:
        try:
            found = parse(config.hook.pytest_pgsandbox_migration_data(config=config))
        except PgSandboxError as exc:
            found = exc
        config.stash[DATA_KEY] = found
    if isinstance(found, PgSandboxError):
        raise found
    return found


class MigrationChecks(pytest.Collector):
    """The checks of one Alembic source, collected with the session's other items."""

    def __init__(self, *, source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source

    def collect(self) -> list[pytest.Item]:
        return [
            MigrationCheck.from_parent(self, name=check, source=self.source, check=check)
            for check in CHECKS
        ]


class MigrationCheck(pytest.Item):
    """One check of an Alembic history."""

    def __init__(self, *, source: str, check: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.check = check
        self.wanted: tuple[str, ...] = CHECKS

    def runtest(self) -> None:
        sandbox = self.config.stash[SANDBOX_KEY]
        try:
            try:
                data = revision_data(self.config)
            except PgSandboxError:
                if self.check != "single_head":
                    raise
                # The history's heads need no data: that check still says what it found.
                result = sandbox.migration_check(self.source, self.check, (self.check,))
            else:
                result = sandbox.migration_check(self.source, self.check, self.wanted, data)
        except PgSandboxError as exc:
            raise MigrationCheckFailed(str(exc)) from None
        outcome = result.outcome
        if outcome.status == "failed":
            raise MigrationCheckFailed(outcome.message)
        if outcome.status == "skipped":
            pytest.skip(mask(outcome.message))
        note = f"for {result.short}, cached" if result.cached else f"for {result.short}"
        self.user_properties.append((PROPERTY, note))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, MigrationCheckFailed):
            return mask(str(excinfo.value))
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        target = self.source.partition(":")[2]
        return Path(target), None, f"{self.source}: {WHAT[self.check]}"


def collectors(session: pytest.Session) -> list[MigrationChecks]:
    """A collector per alembic: source when check_migrations is on, for the session's own
    collection (so that "collected N items", -k, --co and xdist count the checks)."""
    settings = session.config.stash[SETTINGS_KEY]
    if not settings.check_migrations:
        return []
    made = [
        MigrationChecks.from_parent(
            session, name=f"{kind}:{target}", nodeid=f"{kind}:{target}", source=f"{kind}:{target}"
        )
        for kind, target in settings.schema
        if kind == "alembic"
    ]
    if made:
        session.config.stash[SANDBOX_KEY].prepare_migration_checks()
    return made


def selected(items: list[pytest.Item]) -> None:
    """Tell each check which checks of its source the session runs (after -k, deselect)."""
    by_source: dict[str, list[str]] = {}
    for item in items:
        if isinstance(item, MigrationCheck):
            by_source.setdefault(item.source, []).append(item.check)
    for item in items:
        if isinstance(item, MigrationCheck):
            item.wanted = tuple(by_source[item.source])


def report_status(report: pytest.TestReport) -> tuple[str, str, Any] | None:
    """``PASSED for <hash>, cached`` in verbose reports of a check that passed."""
    if report.when != "call" or not report.passed:
        return None
    note = next((value for key, value in report.user_properties if key == PROPERTY), None)
    if note is None:
        return None
    return "passed", ".", (f"PASSED {note}", {"green": True})


@pytest.fixture
def pg_migrations(request: pytest.FixtureRequest) -> Iterator[MigrationDatabase]:
    """A database of the test's own at the base of the Alembic history (pg_schema's
    ``alembic:`` source): ``upgrade(rev)``, ``downgrade(rev)``, ``execute(sql, params)``
    (autocommit), ``current()``, ``url``. Dropped after the test.

    Put rows in at one revision, upgrade, and assert on what the migration made of them::

        def test_emails_are_lowercased(pg_migrations):
            pg_migrations.upgrade("0001")
            pg_migrations.execute("INSERT INTO users (name) VALUES ('Alice Chen')")
            pg_migrations.upgrade("0002")
            assert pg_migrations.execute("SELECT email FROM users").fetchall() == [(None,)]
    """
    __tracebackhide__ = True
    sandbox = request.config.stash[SANDBOX_KEY]
    try:
        database = sandbox.migration_database(revision_data(request.config))
    except PgSandboxError as exc:
        pytest.fail(mask(str(exc)), pytrace=False)
    try:
        yield database
    finally:
        database.close()
