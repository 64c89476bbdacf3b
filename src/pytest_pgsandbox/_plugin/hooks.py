"""The pytest adapter: options from the settings table, the report header, the life cycle.

Flags, ini keys and environment variables are all generated from ``settings.SETTINGS``.
Settings are resolved once, in ``pytest_configure``; a bad value stops pytest with a usage
error that names the setting, the value, where it came from and what is accepted.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pytest

from pytest_pgsandbox._engine.naming import new_run_id
from pytest_pgsandbox._engine.sandbox import Sandbox
from pytest_pgsandbox._engine.sandbox import XdistRun
from pytest_pgsandbox._engine.servers.base import PgServer
from pytest_pgsandbox._engine.servers.discovery import find_binaries
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox._plugin import migrations
from pytest_pgsandbox._plugin.keys import EARLY_RUN_KEY
from pytest_pgsandbox._plugin.keys import ENV_SAVED_KEY
from pytest_pgsandbox._plugin.keys import HANDLE_KEY
from pytest_pgsandbox._plugin.keys import KEPT_KEY
from pytest_pgsandbox._plugin.keys import SANDBOX_KEY
from pytest_pgsandbox._plugin.keys import SETTINGS_KEY
from pytest_pgsandbox._plugin.keys import XDIST_RUN_KEY
from pytest_pgsandbox._plugin.sharing import add_database_to_engine_tests
from pytest_pgsandbox._plugin.stopping import FATAL
from pytest_pgsandbox._plugin.stopping import FATAL_KEY
from pytest_pgsandbox._plugin.stopping import stop_session as _stop_session
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.errors import ServerDied
from pytest_pgsandbox.errors import SettingError
from pytest_pgsandbox.errors import TemplateError
from pytest_pgsandbox.settings import SETTINGS
from pytest_pgsandbox.settings import Setting
from pytest_pgsandbox.settings import Settings
from pytest_pgsandbox.settings import resolve

if TYPE_CHECKING:
    from pytest_pgsandbox._engine.templates.template import TemplateSpec

pytest_plugins = [
    "pytest_pgsandbox._plugin.fixtures",
    "pytest_pgsandbox._plugin.async_fixtures",
    "pytest_pgsandbox._plugin.pgsql_fixtures",
    "pytest_pgsandbox._plugin.migrations",
    "pytest_pgsandbox.factories",
    "pytest_pgsandbox.aws",
]


# Fixtures that need the server: when a selected test uses one, the server starts right
# after collection (so its start-up is reported once, up front) instead of inside a test.
SERVER_FIXTURES = frozenset({"pg_server", "pg_template", "pg_migrations"})
COMPAT_PLUGIN = "pgsandbox-postgresql"  # pytest-postgresql's default fixtures, when asked for


def _dest(setting: Setting) -> str:
    return "pg_" + setting.name


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgsandbox", "PostgreSQL test databases (pytest-pgsandbox)")
    for s in SETTINGS:
        text = f"{s.help} [env {s.env}, ini {s.ini}; default: {s.default!r}]"
        if s.repeatable:
            group.addoption(
                s.flag,
                *s.aliases,
                action="append",
                dest=_dest(s),
                default=None,
                metavar=s.metavar,
                help=text,
            )
        elif s.is_flag:
            # No optional value: "--pg-reuse tests/" must not read "tests/" as the value.
            group.addoption(s.flag, action="store_const", const="true", dest=_dest(s), help=text)
            group.addoption(
                s.no_flag,
                action="store_const",
                const="false",
                dest=_dest(s),
                help=f"turn {s.flag} off (e.g. when the ini file turns it on)",
            )
        else:
            group.addoption(s.flag, dest=_dest(s), default=None, metavar=s.metavar, help=text)
        if s.repeatable:
            parser.addini(s.ini, text, type="linelist", default=None)
        else:
            parser.addini(s.ini, text, type="string", default=None)
    from pytest_pgsandbox.postgresql import _config as postgresql_config

    postgresql_config.register(parser)  # unless pytest-postgresql does
    group.addoption(
        "--pg-info",
        action="store_true",
        default=False,
        help="Show every pgsandbox setting, its value and where it came from, and the "
        "PostgreSQL that would be used; then exit.",
    )


def _ini_values(config: pytest.Config) -> dict[str, str | Sequence[str] | None]:
    values: dict[str, str | Sequence[str] | None] = {}
    for s in SETTINGS:
        raw = config.getini(s.ini)
        values[s.name] = None if raw in (None, "", []) else raw
    return values


def settings_from_config(config: pytest.Config, early: bool = False) -> Settings:
    options = config.known_args_namespace if early else config.option
    flags = {s.name: getattr(options, _dest(s), None) for s in SETTINGS}
    ini_file = config.inipath.name if config.inipath else "the ini file"
    try:
        return resolve(flags, os.environ, _ini_values(config), ini_file)
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    settings = settings_from_config(config)
    config.stash[SETTINGS_KEY] = settings
    early = config.stash.get(SANDBOX_KEY, None)
    if early is not None:  # started before conftest.py files were imported (env setting)
        run = config.stash.get(EARLY_RUN_KEY, None)
        if run is not None and getattr(config.option, "testrunuid", None) is None:
            config.option.testrunuid = run  # the workers' run is the server's
        workerinput = getattr(config, "workerinput", None)
        if workerinput is not None and workerinput.get("pgsandbox_secret"):
            early.secret = workerinput["pgsandbox_secret"]
        _register(config, settings, early)
        return
    workerinput = getattr(config, "workerinput", None)
    xdist = None
    secret = None
    if workerinput is not None:  # an xdist worker: share the run's server with the others
        uid = str(workerinput.get("testrunuid") or new_run_id())
        run_id, worker = uid[:8], str(workerinput.get("workerid", "main"))
        controller = int(workerinput.get("pgsandbox_controller_pid") or os.getppid())
        xdist = XdistRun(uid, controller)
        secret = workerinput.get("pgsandbox_secret")
    else:
        run_id, worker = new_run_id(), "main"
    sandbox = Sandbox(settings, run_id, worker, base=config.rootpath, xdist=xdist, secret=secret)
    _register(config, settings, sandbox)


def _register(config: pytest.Config, settings: Settings, sandbox: Sandbox) -> None:
    config.addinivalue_line(
        "markers",
        'pg(isolation="transaction"|"clone"|"reset", scenario="NAME"): how the pg fixture '
        "isolates this test, and the data scenario it starts from (pytest-pgsandbox)",
    )
    config.stash[SANDBOX_KEY] = sandbox
    if settings.pytest_postgresql and not config.pluginmanager.has_plugin(COMPAT_PLUGIN):
        # Registered after pytest-postgresql's plugin (if any): these fixtures win.
        import pytest_pgsandbox.postgresql.plugin as compat

        config.pluginmanager.register(compat, COMPAT_PLUGIN)
    if settings.django:
        _register_django(config)
    # If pytest never reaches pytest_unconfigure (os._exit is not caught by anything),
    # at least a normal interpreter exit stops the server.
    atexit.unregister(sandbox.close)  # registered once
    atexit.register(sandbox.close)


DJANGO_PLUGIN = "django"  # pytest-django's name in pytest's plugin manager


def _register_django(config: pytest.Config) -> None:
    """Serve pytest-django's test databases (the ``django`` setting): registered after
    pytest-django, so that our fixture overrides its, and a conftest.py override ours."""
    if not config.pluginmanager.has_plugin(DJANGO_PLUGIN):
        where = config.stash[SETTINGS_KEY].source("django")
        raise pytest.UsageError(
            f"pgsandbox: django=true (from {where}) serves pytest-django's test databases, "
            "but pytest-django is not active. Install it (pip install "
            "'pytest-pgsandbox[django]'), do not disable it with -p no:django, or turn the "
            "setting off."
        )
    from pytest_pgsandbox._plugin import django as django_plugin

    if not config.pluginmanager.has_plugin(django_plugin.PLUGIN):
        config.pluginmanager.register(django_plugin, django_plugin.PLUGIN)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: tell each worker who owns the server the workers will share."""
    node.workerinput["pgsandbox_controller_pid"] = os.getpid()
    # The same role passwords in every worker of the run (never printed).
    node.workerinput["pgsandbox_secret"] = node.config.stash[SANDBOX_KEY].secret
    node.config.stash[XDIST_RUN_KEY] = str(node.workerinput["testrunuid"])


def pytest_unconfigure(config: pytest.Config) -> None:
    sandbox = config.stash.get(SANDBOX_KEY, None)
    if sandbox is None:
        return
    atexit.unregister(sandbox.close)
    for name, before in config.stash.get(ENV_SAVED_KEY, {}).items():
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
    server = sandbox.server
    try:
        sandbox.close()
        run = config.stash.get(XDIST_RUN_KEY, None)
        if run is not None:  # the controller stops the server its workers shared
            from pytest_pgsandbox._engine.servers import janitor
            from pytest_pgsandbox._engine.servers import places

            s = sandbox.settings
            runtime = places.runtime_dir(s.runtime_dir, s.tmpfs)
            janitor.stop_run(runtime, run)
            from pytest_pgsandbox._engine.servers import docker

            docker.stop_run(runtime, run)  # only if a worker started a container
    except Exception as exc:  # the tests have run; a cleanup problem must not hide them
        if not _died(server):  # else the tests' reports said so already
            sys.stderr.write(f"pgsandbox: cleanup after the session failed: {mask(str(exc))}\n")


def _died(server: PgServer | None) -> bool:
    if server is None:
        return False
    try:
        server.check_alive(recheck=True)
    except ServerDied:
        return True
    return False


def _postgres_line(settings: Settings) -> str:
    if settings.uses_existing_server:
        return f"postgresql: existing server {settings.describe_existing()}"
    if settings.server == "docker":
        return f"postgresql: Docker image {settings.image}"
    try:
        binaries = find_binaries(settings.bin_dir)
    except PgSandboxError as exc:
        return f"postgresql: not available - {str(exc).splitlines()[0]}"
    return f"postgresql: {binaries.describe()}"


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[SETTINGS_KEY]
    sandbox = config.stash[SANDBOX_KEY]
    if sandbox.opened is not None:
        lines = [f"postgresql: {sandbox.opened.describe()}"]
        attached = getattr(sandbox.opened, "attached", "")
        if attached:
            lines.append(f"postgresql: attached to the {attached}")
    else:
        lines = [_postgres_line(settings)]
    for name, _value, source in settings.non_default():
        lines.append(f"pgsandbox: {name}={settings.shown(name)} (from {source})")
    if sandbox.env_shown:
        shown = " ".join(f"{name}={value}" for name, value in sandbox.env_shown.items())
        workers = ""
        if config.getoption("numprocesses", None) and config.pluginmanager.has_plugin("xdist"):
            workers = " (each xdist worker: the same for a database of its own)"
        lines.append(f"pgsandbox: environment set for the session: {shown}{workers}")
    lines.extend(_postgresql_fixtures_lines(config, settings))
    if settings.check_migrations and not any(kind == "alembic" for kind, _ in settings.schema):
        lines.append(
            "pgsandbox: check_migrations is on, and the schema setting has no alembic: "
            "source: there is no history to check"
        )
    return lines


def _postgresql_fixtures_lines(config: pytest.Config, settings: Settings) -> list[str]:
    """Who provides pytest-postgresql's default fixtures, when that is a question."""
    from pytest_pgsandbox.postgresql import _config as postgresql_config

    upstream = config.pluginmanager.has_plugin(postgresql_config.PLUGIN)
    if settings.pytest_postgresql:
        also = ", pytest-postgresql's are overridden" if upstream else ""
        where = settings.source("pytest_postgresql")
        return [
            "pgsandbox: postgresql, postgresql_proc fixtures: pytest-pgsandbox "
            f"(pytest_postgresql=true from {where}{also})"
        ]
    if upstream:
        return [
            "pgsandbox: postgresql, postgresql_proc fixtures: pytest-postgresql (set "
            "pg_pytest_postgresql = true for pytest-pgsandbox's; fixtures made with "
            "pytest_pgsandbox.postgresql.factories are pytest-pgsandbox's either way)"
        ]
    return []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test whose database is kept (keep=failed): say where it is, in its report.

    A test that failed because the server died stops the session: its report explains the
    death; the tests after it would only fail the same way.
    """
    report = yield
    if report.failed:
        _stop_if_server_died(item)
        full = _disk_full_hint(item, call)
        if full:
            report.sections.append(("pgsandbox", full))
    if report.when != "call" or not report.failed:
        return report
    sandbox = item.config.stash.get(SANDBOX_KEY, None)
    handle = item.stash.get(HANDLE_KEY, None)
    if sandbox is None or handle is None or sandbox.settings.keep == "never":
        return report
    if handle.isolation == "transaction":
        report.sections.append(
            ("pgsandbox", "database not kept: under transaction isolation it is rolled back")
        )
        return report
    name = sandbox.kept_name(handle.info, handle.isolation == "reset")
    item.stash[KEPT_KEY] = name
    info = handle.info.for_db(name)
    how = ""
    if info.password:
        how = f" (pgsandbox url --dbname {name} --reveal-password prints it with its password)"
    report.sections.append(("pgsandbox", f"database kept: {info.url(masked=True)}{how}"))
    return report


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_pgsandbox._plugin import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    """The migration checks (check_migrations) are the session's first collectors: counted
    in "collected N items", selected by -k and --deselect, listed by --co."""
    report = yield
    if isinstance(collector, pytest.Session) and report.passed:
        report.result[:0] = migrations.collectors(collector)
    return report


def pytest_report_teststatus(report: pytest.TestReport) -> tuple[str, str, Any] | None:
    return migrations.report_status(report)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    add_database_to_engine_tests(session.items)
    migrations.selected(session.items)
    if config.option.collectonly:
        return
    sandbox = config.stash[SANDBOX_KEY]
    compat = _postgresql_wishes(session, sandbox)
    if (
        not compat
        and not sandbox.settings.env
        and not any(
            SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            or isinstance(item, migrations.MigrationCheck)
            for item in session.items
        )
    ):
        return
    scenarios = _scenarios_of(session.items)
    sandbox.scenarios_wanted = bool(scenarios)
    # A server, template or scenario that cannot be had stops the session before any test
    # runs, with one message: not the same failure in every test that needs it.
    try:
        sandbox.ensure_server()
        sandbox.prepare_env_database()  # applications configured by env reach it
    except TemplateError as exc:
        _stop_session(session, f"pgsandbox: the template could not be built.\n{mask(str(exc))}")
        return
    except PgSandboxError as exc:
        _stop_session(session, f"pgsandbox: {mask(str(exc))}")
        return
    ready = []
    for name in scenarios:
        try:
            ready.append((name, sandbox.scenario_template(sandbox.template, name)))
        except PgSandboxError as exc:
            _stop_session(session, f"pgsandbox: {mask(str(exc))}")
            return
    server = sandbox.server
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if server is None or reporter is None:
        return
    for note in getattr(server, "notes", ()):  # what changed how it runs: said even with -q
        reporter.write_line(f"postgresql: {note}")
    attached = getattr(server, "attached", "")
    said = sandbox.env_shown and config.get_verbosity() >= 0  # in the header already
    if attached and not said:  # a server this run did not start: said even with -q
        reporter.write_line(f"postgresql: attached to the {attached}")
    if config.get_verbosity() < 0:
        return
    cache_note = ""
    if getattr(server, "initdb_cached", None) is False:
        cache_note = ", its cluster cache was prepared (once for these inputs)"
    reporter.write_line(
        f"postgresql: {server.describe()}, ready in {sandbox.startup_seconds:.2f} s{cache_note}"
    )
    if sandbox.place is not None and sandbox.template is not None:
        reporter.write_line(
            f"postgresql: the role {server.admin.user} may not create databases: tests run in "
            f"{server.admin.dbname} in place ({sandbox.template.describe()})"
        )
    elif sandbox.template is not None:
        reporter.write_line(f"postgresql: {sandbox.template.describe()}")
    for name, template in ready:
        how = "reused" if template.reused else f"loaded in {template.build_seconds:.2f} s"
        reporter.write_line(f"postgresql: scenario {name}: template {how}")


def _postgresql_wishes(session: pytest.Session, sandbox: Sandbox) -> bool:
    """Apply what the pytest-postgresql fixtures the tests use ask of the server (before it
    starts); whether any is used."""
    from pytest_pgsandbox.postgresql import _config as postgresql_config
    from pytest_pgsandbox.postgresql import _wishes

    used = _wishes.used_proc_fixtures(session.items)
    if not used or sandbox.opened is not None:
        return bool(used)
    wishes = _wishes.collect(used, postgresql_config.read(session.config), sandbox.settings)
    sandbox.settings = wishes.apply(sandbox.settings)
    session.config.stash[SETTINGS_KEY] = sandbox.settings
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        for name, source in sorted(wishes.sources.items()):
            shown = _wishes._shown(name, wishes.values[name])
            reporter.write_line(f"pgsandbox: {name}={shown} (from {source})")
        for note in wishes.notes:
            reporter.write_line(f"pgsandbox: {note}")
    return True


DISK_FULL = "53100"  # SQLSTATE disk_full


def _is_disk_full(exc: BaseException) -> bool:
    """The error, or one it was raised from (SQLAlchemy's wrapped driver error too), is
    PostgreSQL's disk_full."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        if DISK_FULL in (getattr(found, "sqlstate", None), getattr(found, "pgcode", None)):
            return True
        orig = getattr(found, "orig", None)
        found = orig if isinstance(orig, BaseException) else found.__cause__ or found.__context__
    return False


def _disk_full_hint(item: pytest.Item, call: pytest.CallInfo[None]) -> str:
    """A test that failed because the server's disk is full: which folder, what is free, and
    the setting that moves the servers ("" for any other failure)."""
    if call.excinfo is None or not _is_disk_full(call.excinfo.value):
        return ""
    sandbox = item.config.stash.get(SANDBOX_KEY, None)
    server = sandbox.server if sandbox is not None else None
    folder = getattr(server, "folder", None)
    if server is None:
        return ""
    if getattr(server, "data_in_ram", False):
        where = "its data is in the container's memory (a tmpfs): free memory on the machine"
        return f"the PostgreSQL server ran out of room for its data; {where}."
    if not isinstance(folder, Path):
        return (
            "the PostgreSQL server ran out of room for its data: free space on the server's "
            "disk, or test against a server of pgsandbox's own (unset pg_url)."
        )
    from pytest_pgsandbox._engine.servers.places import room_problem

    room = room_problem(folder) or (
        f"Its data is in {folder}: free space there, or move the servers elsewhere with "
        "--pg-runtime-dir / PGSANDBOX_RUNTIME_DIR / pg_runtime_dir."
    )
    return f"the PostgreSQL server ran out of room for its data (disk full). {room}"


def _stop_if_server_died(item: pytest.Item) -> None:
    sandbox = item.config.stash.get(SANDBOX_KEY, None)
    server = sandbox.server if sandbox is not None else None
    if server is None or item.session.shouldfail:
        return
    try:
        server.check_alive(recheck=True)
    except ServerDied as died:
        # The test that explained it (under xdist perhaps another worker's), else this one.
        where = died.reported_in or item.nodeid
        message = (
            f"pgsandbox: the PostgreSQL server stopped while tests were running; why is in the "
            f"report of {where}. The tests after it were not run."
        )
        if getattr(item.config, "workeroutput", None) is None:
            item.session.shouldfail = message
        else:
            _stop_session(item.session, message)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> bool | None:
    """An xdist worker whose session must stop runs no test (see ``_stop_session``)."""
    if FATAL_KEY in item.config.stash:
        return True
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: a worker that stopped for a pgsandbox reason stops the session, with
    that worker's message, once."""
    message = getattr(node, "workeroutput", {}).get(FATAL)
    if message and not node.config.stash.get(FATAL_KEY, None):
        node.config.stash[FATAL_KEY] = message
        pytest.exit(message, 1)


def _scenarios_of(items: Sequence[pytest.Item]) -> list[str]:
    """The scenarios the ``pg`` markers of ``items`` name (well-formed markers only: a bad
    one fails its own test)."""
    names: set[str] = set()
    for item in items:
        for marker in item.iter_markers("pg"):
            scenario = marker.kwargs.get("scenario")
            if isinstance(scenario, str):
                names.add(scenario)
                break
    return sorted(names)


def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if not config.option.pg_info:
        return None
    settings = settings_from_config(config)
    print("pgsandbox settings (flag > environment > ini > default):")
    rows = [(s.name, settings.shown(s.name) or "-", settings.source(s.name)) for s in SETTINGS]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, shown, source in rows:
        print(f"  {name:<{widths[0]}}  {shown:<{widths[1]}}  {source}".rstrip())
    print(_postgres_line(settings))
    spec = Sandbox(settings, "info", base=config.rootpath).spec()
    if not spec.empty:
        from pytest_pgsandbox._engine.templates.template import coverage

        print("the template's hash covers (with the PostgreSQL major and pgsandbox's version):")
        for line in coverage(spec):
            print(f"  {line}")
    if settings.django:
        _django_info(spec)
    return 0


def _django_info(spec: TemplateSpec) -> None:
    """What each Django alias's template hash covers (read from files, no database)."""
    try:
        from django.apps import apps
    except ImportError:
        print("django=true, but Django is not installed")
        return
    if not apps.ready:
        print("django=true, but Django is not set up (no DJANGO_SETTINGS_MODULE?)")
        return
    from pytest_pgsandbox._engine.templates import django_source
    from pytest_pgsandbox._engine.templates.template import extra_inputs

    print("each Django alias's template hash covers (with the PostgreSQL major):")
    for line in django_source.coverage(extra_inputs(spec)):
        print(f"  {line}")
