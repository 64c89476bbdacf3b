"""What pytest-postgresql's factory arguments and options ask of the server, as settings.

A run has one server, started before the first test. So before it starts, the arguments of
the proc fixtures the selected tests use (``port``, ``executable``, ``postgres_options``),
those of ``postgresql_noproc`` (the server it names becomes the run's server) and the
``--postgresql-*`` options / ``postgresql_*`` ini keys become settings, unless a ``pg_*``
setting already says otherwise (then it wins, and the report header says so).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest

from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox.postgresql._config import CompatConfig
from pytest_pgsandbox.postgresql._proc import ProcArgs
from pytest_pgsandbox.settings import DEFAULT
from pytest_pgsandbox.settings import Settings

ARGS_ATTRIBUTE = "pgsandbox_postgresql_args"  # on a proc fixture's function: its ProcArgs
PROC_NAME_ATTRIBUTE = "pgsandbox_postgresql_proc"  # on a client fixture's: its proc's name

# postgres's one-letter options and the server settings they stand for
_SHORT = {"-N": "max_connections", "-B": "shared_buffers", "-S": "work_mem"}


def postgres_options(text: str, where: str) -> list[tuple[str, str]]:
    """``-N 16 -c key=value --key=value -F`` as server settings."""
    out: list[tuple[str, str]] = []
    words = shlex.split(text)
    i = 0
    while i < len(words):
        word = words[i]
        name = next((k for k in _SHORT if word.startswith(k)), None)
        if word == "-F":
            out.append(("fsync", "off"))
        elif name is not None:
            value = word[len(name) :]
            if not value:
                i += 1
                value = words[i] if i < len(words) else ""
            out.append((_SHORT[name], value))
        elif word.startswith(("-c", "--")):
            item = word[2:]
            if word == "-c":
                i += 1
                item = words[i] if i < len(words) else ""
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise pytest.UsageError(_bad(text, where, word))
            out.append((key.replace("-", "_"), value))
        else:
            raise pytest.UsageError(_bad(text, where, word))
        i += 1
    return out


def _bad(text: str, where: str, word: str) -> str:
    return (
        f"postgres_options {text!r} ({where}): {word!r} is not understood. pgsandbox starts "
        "postgres itself and takes server settings as -c key=value, --key=value, -N "
        "(max_connections), -B (shared_buffers), -S (work_mem) or -F (fsync off); or use "
        "--pg-conf key=value."
    )


@dataclass
class Wishes:
    """Settings the factories ask for, and notes for the report header."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def want(self, settings: Settings, name: str, value: Any, source: str) -> None:
        if settings.source(name) != DEFAULT:
            if getattr(settings, name) != value:
                self.notes.append(
                    f"{source} asks for {name}={_shown(name, value)}; the {name} setting "
                    f"(from {settings.source(name)}) wins"
                )
            return
        if name in self.values:
            if self.values[name] != value:
                self.notes.append(
                    f"{source} asks for {name}={_shown(name, value)}; one server serves the "
                    f"run and {self.sources[name]} asked first"
                )
            return
        self.values[name] = value
        self.sources[name] = source

    def apply(self, settings: Settings) -> Settings:
        if not self.values:
            return settings
        sources = {**settings.sources, **self.sources}
        return dataclasses.replace(settings, **self.values, sources=sources)


def _shown(name: str, value: Any) -> str:
    if name == "url":
        from pytest_pgsandbox._engine.urls import mask

        return mask(str(value))
    return str(value)


def _port(value: Any) -> int | None:
    """An exact port (pytest-postgresql also takes None, -1, ranges and sets: any port)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def collect(
    used: Iterable[tuple[str, ProcArgs]], config: CompatConfig, settings: Settings
) -> Wishes:
    """The wishes of the proc fixtures ``used`` (name, arguments) and of the options."""
    wishes = Wishes()
    used = list(used)
    _one_password_per_user(used, config)
    noprocs = [(n, a) for n, a in used if a.kind == "noproc" and not a.depends_on]
    for name, args in used:
        where = f"{name} = postgresql_{args.kind}(...)"
        if args.kind == "proc":
            port = _port(args.port)
            if port is not None:
                wishes.want(settings, "port", port, f"{where} port")
            if args.executable:
                wishes.want(settings, "bin_dir", Path(args.executable).parent, where)
            if args.postgres_options:
                conf = postgres_options(args.postgres_options, where)
                wishes.want(settings, "conf", (*settings.conf, *conf), f"{where} postgres_options")
    for name, args in noprocs:
        host = args.host or config.get("host")
        port = args.port or config.get("port")
        user = args.user or config.get("user")
        if host or port or user:
            password = args.password or config.get("password")
            dbname = args.maintenance_dbname or config.get("maintenance_dbname") or "postgres"
            url = ConnInfo(
                host=str(host or "127.0.0.1"),
                port=int(port or 5432),
                user=str(user or "postgres"),
                password=str(password) if password else None,
                dbname=str(dbname),
            ).url()
            wishes.want(settings, "url", url, f"{name} = postgresql_noproc(...)")
    if not noprocs:
        port = _port(config.get("port"))
        if port is not None:
            wishes.want(settings, "port", port, "--postgresql-port / postgresql_port")
    if config.get("exec"):
        wishes.want(settings, "bin_dir", Path(config.get("exec")).parent, "postgresql_exec")
    if config.get("postgres_options"):
        text = str(config.get("postgres_options"))
        where = "--postgresql-postgres-options / postgresql_postgres_options"
        conf = postgres_options(text, where)
        wishes.want(settings, "conf", (*settings.conf, *conf), where)
    return wishes


def _one_password_per_user(used: list[tuple[str, ProcArgs]], config: CompatConfig) -> None:
    """A role has one password: two proc fixtures may not give one user two."""
    seen: dict[str, tuple[str | None, str]] = {}
    for name, args in used:
        user = args.user or config.get("user")
        if not user or (args.kind == "noproc" and not args.depends_on):
            continue  # a noproc's user is how it logs in to its server, not a role to make
        password = args.password or config.get("password")
        first = seen.setdefault(str(user), (password, name))
        if first[0] != password:
            raise pytest.UsageError(
                f"{first[1]} and {name} both make the role {user!r} with different passwords; "
                "the tests of a run share one server, where a role has one password. Give "
                "them the same password (or none: a fresh one is made for the run)."
            )


def used_proc_fixtures(items: Iterable[Any]) -> list[tuple[str, ProcArgs]]:
    """(name, arguments) of every factory-made proc fixture the ``items`` use: in their
    fixture closure, or named by a client fixture or a ``depends_on`` in it (those are
    fetched by name while the test runs)."""
    found: dict[str, ProcArgs] = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        pending = list(info.name2fixturedefs.items())
        while pending:
            name, defs = pending.pop()
            if not defs or name in found:
                continue
            func = defs[-1].func
            args = getattr(func, ARGS_ATTRIBUTE, None)
            named = getattr(func, PROC_NAME_ATTRIBUTE, None)
            if isinstance(args, ProcArgs):
                found[name] = args
                named = args.depends_on
            if isinstance(named, str) and named not in found:
                more = item.session._fixturemanager.getfixturedefs(named, item)
                if more:
                    pending.append((named, tuple(more)))
    return sorted(found.items())
