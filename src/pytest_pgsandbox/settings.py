"""How a setting's value is chosen (the table itself is in ``_settings_table``).

Each setting ``NAME`` is the pytest flag ``--pg-NAME`` (underscores become dashes), the ini
key ``pg_NAME`` and the environment variable ``PGSANDBOX_NAME``. A value is taken from the
first of these that is set: flag, environment, ini, default. The source of every value is kept
so that the report header and error messages can say where it came from.

This module does not import pytest: the plugin and the ``pgsandbox`` command share it.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from pytest_pgsandbox._settings_table import DEFAULT
from pytest_pgsandbox._settings_table import ISOLATIONS
from pytest_pgsandbox._settings_table import KEEPS
from pytest_pgsandbox._settings_table import SETTINGS
from pytest_pgsandbox._settings_table import SETTINGS_BY_NAME
from pytest_pgsandbox._settings_table import SOURCE_KINDS
from pytest_pgsandbox._settings_table import DriverKind
from pytest_pgsandbox._settings_table import Invalid
from pytest_pgsandbox._settings_table import IsolationKind
from pytest_pgsandbox._settings_table import KeepKind
from pytest_pgsandbox._settings_table import ServerKind
from pytest_pgsandbox._settings_table import Setting
from pytest_pgsandbox.errors import SettingError

__all__ = [
    "DEFAULT",
    "ISOLATIONS",
    "KEEPS",
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "SOURCE_KINDS",
    "DriverKind",
    "IsolationKind",
    "KeepKind",
    "RawValue",
    "ServerKind",
    "Setting",
    "Settings",
    "markdown_table",
    "resolve",
]


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
    template_inputs: tuple[str, ...] = ()
    scenarios_dir: Path | None = None
    role: str | None = None
    role_per_worker: bool = False
    reuse: bool = False
    attach: str | None = None
    isolation: IsolationKind = "transaction"
    driver: DriverKind = "psycopg"
    clone_pool: int = 2
    keep: KeepKind = "never"
    verify_isolation: bool = False
    check_migrations: bool = False
    migrations_timeout: float = 300.0
    migrations_models: str | None = None
    tmpfs: bool = True
    pytest_postgresql: bool = False
    django: bool = False
    django_reset: bool = False
    start_timeout: float = 60.0
    env: tuple[tuple[str, str], ...] = ()
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

    def shown(self, name: str) -> str:
        """The value of ``name`` as a user writes it (``alembic:alembic.ini``, ``a=b``,
        ``true``), passwords masked."""
        return show_value(name, getattr(self, name))

    def with_values(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


RawValue = str | Sequence[str]


def show_value(name: str, value: object) -> str:
    """A setting's value as it is written in a flag or an ini file."""
    from pytest_pgsandbox._engine.urls import mask

    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        if all(isinstance(item, str) for item in value):
            return ",".join(value)  # a comma list, as it is written
        sep = "=" if name in ("conf", "env") else ":"
        return ", ".join(sep.join(str(part) for part in item) for item in value)
    return mask(str(value))


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
            except Invalid as exc:
                raise _error(setting, item, source, exc) from None
        return tuple(parsed)
    if not isinstance(raw, str):
        raw = " ".join(raw)
    try:
        return setting.parse(raw)
    except Invalid as exc:
        raise _error(setting, raw, source, exc) from None


def _error(setting: Setting, raw: str, source: str, exc: Invalid) -> SettingError:
    """The error for a value that cannot be used (a password in it masked)."""
    from pytest_pgsandbox._engine.urls import mask

    reason = str(exc.args[0]) if exc.args else ""
    return SettingError(setting.name, mask(raw), source, setting.accepted, reason)


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
