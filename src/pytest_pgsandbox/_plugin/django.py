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

import contextlib
import inspect
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any
from typing import NoReturn

import pytest

from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._plugin.keys import SANDBOX_KEY
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.errors import TemplateError

PLUGIN = "pgsandbox-django"
NOTES_KEY = pytest.StashKey[list[str]]()
# Reset isolation for transactional tests: each alias's instrumented template (when some
# collected test asks for reset), then each alias's test database once it exists.
RESET_TEMPLATES_KEY = pytest.StashKey[dict[str, "PgTemplate"]]()
RESETS_KEY = pytest.StashKey[dict[str, "DjangoReset"]]()
SWAPPED_KEY = pytest.StashKey[contextlib.ExitStack]()
# What puts a test's database back makes it transactional (pytest-django's names).
TRANSACTIONAL_FIXTURES = {"transactional_db", "live_server", "django_db_reset_sequences"}
NOTES = "pgsandbox_django_notes"  # an xdist worker's lines, for the controller
OURS = __name__

if TYPE_CHECKING:
    from pytest_pgsandbox._engine.isolation.django_reset import DjangoReset
    from pytest_pgsandbox._engine.templates.template import PgTemplate


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

    from pytest_pgsandbox._engine.isolation import django_reset
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
    # Two aliases on two servers in the settings are two test databases on ours too.
    postgresql = [a.name for a in django_source.aliases()]
    for label, name in django_source.separate(settings.DATABASES, postgresql).items():
        own = connections[label].settings_dict
        if own is not settings.DATABASES[label]:
            own.setdefault("TEST", {})["NAME"] = name
        _say(
            config,
            f"django alias {label}: test database {name} (its NAME is another alias's, "
            "on another server)",
        )
    for alias, db in settings.DATABASES.items():
        if django_source.is_postgresql(alias):
            django_source.point_at(db, admin)
            if connections[alias].settings_dict is not db:
                django_source.point_at(connections[alias].settings_dict, admin)
    if not django_db_use_migrations:
        _say(config, "django: --nomigrations: Django creates the test databases (no template)")
        return
    keepdb = django_db_keepdb and not django_db_createdb
    reset_wanted = any(
        wants_reset(item, sandbox.settings.django_reset) for item in request.session.items
    )
    reset_templates = config.stash.setdefault(RESET_TEMPLATES_KEY, {})
    timeout = sandbox.settings.start_timeout

    def clean(name: str) -> bool:
        return django_reset.is_clean(admin, name, timeout)

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
        short = template.fingerprint[:12]
        how = (
            f"template reused ({short})"
            if template.reused
            else f"template migrated in {template.build_seconds:.2f} s ({short})"
        )
        usable: Callable[[str], bool] | None = None
        made = ""
        if reset_wanted:
            try:
                with django_db_blocker.unblock():
                    template = django_reset.ensure_template(
                        admin, template, alias.name, sandbox.run_id, sandbox.settings.start_timeout
                    )
            except PgSandboxError as exc:
                _stop(request, f"pgsandbox: {exc}")
            reset_templates[alias.name] = template
            if not template.reused:
                made = f"; its copy for reset made in {template.build_seconds:.2f} s"
            usable = clean
        db.setdefault("TEST", {})["TEMPLATE"] = template.name
        done = ""
        if keepdb:
            name = django_source.test_name(db)
            done = django_source.keep_copy(admin, name, template, sandbox.run_id, usable)
            done = {
                "kept": f"; --reuse-db: {name} kept",
                "made": f"; --reuse-db: {name} made from it",
                "remade": f"; --reuse-db: {name} was a copy of another template, made again",
                "foreign": f"; --reuse-db: {name} exists but pgsandbox did not make it: "
                "Django reuses it as it is",
            }[done]
        _say(
            config,
            f"django alias {alias.name}: {how}, ready in {time.monotonic() - began:.2f} s"
            f"{done}{made}",
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
        asks = set(getattr(defs[-1], "argnames", ()))
        # Requesting django_db_setup itself is asking for pytest-django's, which requests ours.
        if not asks & {"django_db_modify_db_settings", "django_db_setup"}:
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


# -- reset isolation for transactional tests ---------------------------------------------------


def _is_transaction_test_case(cls: type) -> bool:
    """A Django ``TransactionTestCase`` that is not a ``TestCase`` (collected as unittest)."""
    test = sys.modules.get("django.test")
    if test is None:
        return False
    return issubclass(cls, test.TransactionTestCase) and not issubclass(cls, test.TestCase)


def transactional(item: pytest.Item) -> bool:
    """Whether Django flushes the database after ``item`` (pytest-django's rules)."""
    cls = getattr(item, "cls", None)
    if isinstance(cls, type) and _is_transaction_test_case(cls):
        return True
    marker = item.get_closest_marker("django_db")
    if marker is not None:
        args = marker.args
        transaction = args[0] if args else marker.kwargs.get("transaction", False)
        sequences = args[1] if len(args) > 1 else marker.kwargs.get("reset_sequences", False)
        if transaction or sequences:
            return True
    return bool(TRANSACTIONAL_FIXTURES & set(getattr(item, "fixturenames", ())))


def wants_reset(item: pytest.Item, default: bool) -> bool:
    """Whether ``item``'s databases are put back by reset instead of Django's flush: a
    transactional test whose closest ``pg`` marker naming an isolation says "reset", or,
    with no such marker, the ``django_reset`` setting."""
    if not transactional(item):
        return False
    for marker in item.iter_markers("pg"):  # closest first
        if "isolation" in marker.kwargs:
            return bool(marker.kwargs["isolation"] == "reset")
    return default


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Any:
    """Once ``django_db_setup`` (pytest-django's, or the project's own) has made the test
    databases: each alias's database is made ready for reset, as it is now."""
    result = yield
    if fixturedef.argname == "django_db_setup":
        templates = request.config.stash.get(RESET_TEMPLATES_KEY, {})
        if templates:
            # A project's override that requests pytest-django's runs after it: again.
            before = request.config.stash.get(RESETS_KEY, {})
            request.config.stash[RESETS_KEY] = _prepare_resets(request, templates, before)
            fixturedef.addfinalizer(lambda: _close_resets(request.config))
    return result


def _prepare_resets(
    request: pytest.FixtureRequest,
    templates: dict[str, PgTemplate],
    before: dict[str, DjangoReset],
) -> dict[str, DjangoReset]:
    import psycopg
    from django.db import connections

    from pytest_pgsandbox._engine.isolation.django_reset import DjangoReset
    from pytest_pgsandbox._engine.naming import database_name
    from pytest_pgsandbox._engine.servers import provision
    from pytest_pgsandbox._engine.templates import django_source
    from pytest_pgsandbox._engine.urls import connect
    from pytest_pgsandbox._engine.urls import mask

    config = request.config
    sandbox = config.stash[SANDBOX_KEY]
    server = sandbox.ensure_server()
    timeout = sandbox.settings.start_timeout
    resets: dict[str, DjangoReset] = {}
    for alias, template in templates.items():
        name = str(connections[alias].settings_dict["NAME"])
        with connect(server.admin, timeout=timeout) as admin:
            if not provision.exists(admin, name):
                continue  # no collected test uses this alias: Django did not make it
        began = time.monotonic()
        label: dict[str, object] = {
            "kind": "django-test",
            "template": template.fingerprint,
            "run": sandbox.run_id,
        }
        reset = before.get(alias)
        if reset is None or reset.name != name:
            reset = DjangoReset(
                server.admin, name, template.name, label, timeout, django_source.close_all
            )
        try:
            how = reset.prepare(database_name("djsnap", sandbox.run_id, sandbox.worker, alias))
        except (PgSandboxError, psycopg.Error) as exc:  # Django's flush stays
            how, error = None, f"could not be made ready for reset ({mask(str(exc).strip())})"
        else:
            error = (
                f"{name} was not copied from pgsandbox's template (a database --reuse-db "
                "kept that pgsandbox did not make, or --nomigrations)"
            )
        if how is None:
            _say(config, f"django alias {alias}: {error}: its transactional tests are flushed")
            continue
        resets[alias] = reset
        if alias in before and how == "as copied":
            continue  # said already
        seconds = time.monotonic() - began
        what = "as copied" if how == "as copied" else "taken again after django_db_setup wrote"
        _say(
            config,
            f"django alias {alias}: transactional tests asking for it are put back by reset "
            f"(starting point {what}, ready in {seconds:.2f} s)",
        )
    return resets


def _close_resets(config: pytest.Config) -> None:
    """Before Django drops the test databases: nothing of ours may stay connected."""
    import psycopg

    for reset in config.stash.get(RESETS_KEY, {}).values():
        with contextlib.suppress(PgSandboxError, psycopg.Error):  # the server may be gone
            reset.close()
    config.stash[RESETS_KEY] = {}


def _replacements(
    current: Callable[[], dict[str, DjangoReset]],
) -> tuple[Callable[[Any], None], Callable[[Any], None]]:
    """What runs instead of ``TransactionTestCase._fixture_setup`` and ``_fixture_teardown``
    while a test that asked for reset runs: the aliases ready for reset (``current()``, read
    when Django calls: ``django_db_setup`` may run during this very test's set-up) are put
    back; Django's own methods do the rest."""
    from django.test import TransactionTestCase

    setup = inspect.getattr_static(TransactionTestCase, "_fixture_setup")
    setup_func = setup.__func__ if isinstance(setup, classmethod) else setup
    teardown_func = inspect.getattr_static(TransactionTestCase, "_fixture_teardown")

    def split(owner: type) -> tuple[list[str], list[str]]:
        resets = current()
        names = list(owner._databases_names(include_mirrors=False))  # type: ignore[attr-defined]
        return [a for a in names if a in resets], [a for a in names if a not in resets]

    def fixture_setup(self_or_cls: Any) -> None:
        owner = self_or_cls if isinstance(self_or_cls, type) else type(self_or_cls)
        ours, rest = split(owner)
        for alias in ours:  # after a flushed test too: from the starting point
            current()[alias].reset(if_written=True)
        changes: dict[str, object] = {}
        if ours:
            # The sequences are where the starting point has them; Django's reset to 1
            # would collide with the data migrations' rows.
            changes["reset_sequences"] = False
            if not rest:
                changes["serialized_rollback"] = False  # its rows are there already
        with _class_values(owner, changes):
            setup_func(self_or_cls)

    def fixture_teardown(self: Any) -> None:
        ours, rest = split(type(self))
        for alias in ours:
            current()[alias].reset()
        if rest:  # another alias (not PostgreSQL, not ready for reset): flushed by Django
            with _class_values(type(self), {"databases": frozenset(rest)}):
                teardown_func(self)

    return fixture_setup, fixture_teardown


@contextlib.contextmanager
def _class_values(owner: type, values: dict[str, object]) -> Iterator[None]:
    """``owner``'s attributes set to ``values`` meanwhile (its own ones put back after)."""
    missing = object()
    saved = {name: owner.__dict__.get(name, missing) for name in values}
    for name, value in values.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is missing:
                delattr(owner, name)
            else:
                setattr(owner, name, old)


@contextlib.contextmanager
def _swapped(current: Callable[[], dict[str, DjangoReset]]) -> Iterator[None]:
    """Django's ``TransactionTestCase`` resets instead of flushing, meanwhile."""
    from django.test import TransactionTestCase

    setup = inspect.getattr_static(TransactionTestCase, "_fixture_setup")
    teardown = inspect.getattr_static(TransactionTestCase, "_fixture_teardown")
    new_setup, new_teardown = _replacements(current)
    TransactionTestCase._fixture_setup = (
        classmethod(new_setup) if isinstance(setup, classmethod) else new_setup
    )
    TransactionTestCase._fixture_teardown = new_teardown
    try:
        yield
    finally:
        TransactionTestCase._fixture_setup = setup
        TransactionTestCase._fixture_teardown = teardown


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    """A test that asked for reset: Django's flush is swapped out from before its fixtures
    (pytest-django's ``_django_db_helper`` among them) until after their teardown."""
    config = item.config
    if wants_reset(item, config.stash[SANDBOX_KEY].settings.django_reset):
        stack = contextlib.ExitStack()
        stack.enter_context(_swapped(lambda: config.stash.get(RESETS_KEY, {})))
        item.stash[SWAPPED_KEY] = stack
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    try:
        return (yield)
    finally:
        stack = item.stash.get(SWAPPED_KEY, None)
        if stack is not None:
            del item.stash[SWAPPED_KEY]
            stack.close()
