"""pytest-django's test databases on pgsandbox's server, copied from migrated templates.

Registered by ``pytest_configure`` only when the ``django`` setting is on and pytest-django
is active: after pytest-django, so this plugin's ``django_db_modify_db_settings`` (the fixture
pytest-django documents for "the location of your test database") is the one used, while a
project's own override in a ``conftest.py`` still wins over it. Everything else stays
pytest-django's and Django's: ``django_db_setup`` creates each test database with
``TEST["TEMPLATE"]`` set to our template, worker suffixes, mirrors, ``serialized_rollback``
and teardown work as they do without us.
"""

from __future__ import annotations

import time
from typing import Any
from typing import NoReturn

import pytest

from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._plugin.keys import SANDBOX_KEY
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.errors import TemplateError

PLUGIN = "pgsandbox-django"
NOTES_KEY = pytest.StashKey[list[str]]()
NOTES = "pgsandbox_django_notes"  # an xdist worker's lines, for the controller
OURS = __name__


def _say(config: pytest.Config, line: str) -> None:
    """A line on the terminal, also from inside a fixture; an xdist worker's lines are shown
    by the controller when the worker is done (see ``pytest_testnodedown``)."""
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        worker = getattr(config, "workerinput", {}).get("workerid", "worker")
        workeroutput.setdefault(NOTES, []).append(f"{line} [{worker}]")
        return
    _write(config, line)


def _write(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        reporter.write_line(f"pgsandbox: {line}")
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"pgsandbox: {line}")


def _stop(request: pytest.FixtureRequest, message: str) -> NoReturn:
    from pytest_pgsandbox._engine.urls import mask
    from pytest_pgsandbox._plugin.stopping import stop_session

    message = mask(message)
    stop_session(request.session, message)  # ends a serial run here; a worker's after this
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    request: pytest.FixtureRequest,
    django_db_modify_db_settings_parallel_suffix: None,
    django_db_keepdb: bool,
    django_db_createdb: bool,
    django_db_use_migrations: bool,
    django_db_blocker: Any,
) -> None:
    """pytest-pgsandbox's: every PostgreSQL alias's test database on our server, created by
    Django from a template migrated once per fingerprint (pytest-django's suffixes kept)."""
    from django.conf import settings
    from django.db import connections

    from pytest_pgsandbox._engine.templates import django_source
    from pytest_pgsandbox._engine.templates.template import extra_inputs

    config = request.config
    sandbox = config.stash[SANDBOX_KEY]
    extra = extra_inputs(sandbox.spec())
    wanted = [a for a in django_source.aliases() if a.migrate] if django_db_use_migrations else []

    def digest(major: int) -> str:
        return " ".join(django_source.fingerprint(a.name, major, extra) for a in wanted)

    def build(admin: ConnInfo, major: int) -> None:
        for alias in wanted:
            django_source.ensure(
                admin,
                alias,
                django_source.fingerprint(alias.name, major, extra),
                sandbox.run_id,
                sandbox.settings.start_timeout,
            )

    starting = sandbox.server is None
    if wanted and starting:
        # A new private server then starts with the templates in its cached data.
        sandbox.more_templates = (digest, build)
    try:
        with django_db_blocker.unblock():
            server = sandbox.ensure_server()
    except TemplateError as exc:
        _stop(request, f"pgsandbox: the template could not be built.\n{exc}")
    except PgSandboxError as exc:
        _stop(request, f"pgsandbox: {exc}")
    if starting and sandbox.server is not None:
        note = ""
        if getattr(server, "initdb_cached", None) is False:
            note = ", its cluster cache was prepared (templates migrated, once for these inputs)"
        _say(config, f"django: {server.describe()}, ready in {sandbox.startup_seconds:.2f} s{note}")
    admin = server.admin
    major = int(server.version.split(".")[0])
    django_source.close_all()
    for alias, db in settings.DATABASES.items():
        if django_source.is_postgresql(alias):
            django_source.point_at(db, admin)
            if connections[alias].settings_dict is not db:
                django_source.point_at(connections[alias].settings_dict, admin)
    if not django_db_use_migrations:
        _say(config, "django: --nomigrations: Django creates the test databases (no template)")
        return
    keepdb = django_db_keepdb and not django_db_createdb
    for alias in django_source.aliases():
        db = settings.DATABASES[alias.name]
        if not alias.migrate:
            _say(config, f"django alias {alias.name}: TEST MIGRATE is off: no template")
            continue
        began = time.monotonic()
        found = django_source.fingerprint(alias.name, major, extra)
        try:
            with django_db_blocker.unblock():
                template = django_source.ensure(
                    admin, alias, found, sandbox.run_id, sandbox.settings.start_timeout
                )
        except TemplateError as exc:
            _stop(request, f"pgsandbox: the template could not be built.\n{exc}")
        except PgSandboxError as exc:
            _stop(request, f"pgsandbox: {exc}")
        db.setdefault("TEST", {})["TEMPLATE"] = template.name
        short = template.fingerprint[:12]
        how = (
            f"template reused ({short})"
            if template.reused
            else f"template migrated in {template.build_seconds:.2f} s ({short})"
        )
        done = ""
        if keepdb:
            name = django_source.test_name(db)
            done = django_source.keep_copy(admin, name, template, sandbox.run_id)
            done = {
                "kept": f"; --reuse-db: {name} kept",
                "made": f"; --reuse-db: {name} made from it",
                "remade": f"; --reuse-db: {name} was a copy of another template, made again",
                "foreign": f"; --reuse-db: {name} exists but pgsandbox did not make it: "
                "Django reuses it as it is",
            }[done]
        _say(
            config,
            f"django alias {alias.name}: {how}, ready in {time.monotonic() - began:.2f} s{done}",
        )


def inactive_reason(session: pytest.Session, item: pytest.Item) -> str | None:
    """Why this plugin's fixture would not run for ``item``'s database, if it would not."""
    manager = session._fixturemanager

    def owner(name: str) -> str | None:
        defs = manager.getfixturedefs(name, item)
        return str(getattr(defs[-1].func, "__module__", "")) if defs else None

    modify = owner("django_db_modify_db_settings")
    if modify is not None and modify != OURS:
        return f"django_db_modify_db_settings is overridden (in {modify})"
    setup = owner("django_db_setup")
    if setup is not None and setup != "pytest_django.fixtures":
        defs = manager.getfixturedefs("django_db_setup", item) or ()
        if "django_db_modify_db_settings" not in getattr(defs[-1], "argnames", ()):
            return f"django_db_setup is overridden (in {setup}) without requesting it"
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Say once when a project's own fixture override leaves ours inactive."""
    for item in session.items[:1]:
        reason = inactive_reason(session, item)
        if reason is not None:
            _say(
                session.config,
                f"django: {reason}: pytest-pgsandbox's django_db_modify_db_settings is "
                "inactive there; the test databases are where that fixture puts them",
            )
            return


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: show what a worker said of the templates."""
    node.config.stash.setdefault(NOTES_KEY, []).extend(
        getattr(node, "workeroutput", {}).get(NOTES, ())
    )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for line in config.stash.get(NOTES_KEY, []):
        terminalreporter.write_line(f"pgsandbox: {line}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        "pgsandbox: django: each PostgreSQL alias's test database is copied from a template "
        "migrated once per fingerprint"
    ]
