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


class MigrationChecks(pytest.Collector):
    """The checks of one Alembic source (its items are made directly, not collected)."""

    def collect(self) -> list[pytest.Item]:  # pragma: no cover - never collected by pytest
        return []


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
            result = sandbox.migration_check(self.source, self.check, self.wanted)
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


def add_items(session: pytest.Session, items: list[pytest.Item]) -> None:
    """Put the checks first in ``items`` when check_migrations is on."""
    settings = session.config.stash[SETTINGS_KEY]
    if not settings.check_migrations:
        return
    made: list[pytest.Item] = []
    for kind, target in settings.schema:
        if kind != "alembic":
            continue
        source = f"{kind}:{target}"
        parent = MigrationChecks.from_parent(session, name=source, nodeid=source)
        made.extend(
            MigrationCheck.from_parent(parent, name=check, source=source, check=check)
            for check in CHECKS
        )
    if made:
        session.config.stash[SANDBOX_KEY].prepare_migration_checks()
    items[:0] = made


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
        database = sandbox.migration_database()
    except PgSandboxError as exc:
        pytest.fail(mask(str(exc)), pytrace=False)
    try:
        yield database
    finally:
        database.close()
