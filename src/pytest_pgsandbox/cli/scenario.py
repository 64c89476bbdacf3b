"""``pgsandbox scenario ...``: export, load, list, check and diff named data scenarios."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_pgsandbox._engine.templates import scenario
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.errors import ScenarioError
from pytest_pgsandbox.settings import Settings


def _settings(args: argparse.Namespace) -> tuple[Settings, Path]:
    """The settings, and the folder relative paths start from (the ini file's, as pytest's
    rootdir, else the current folder)."""
    from pytest_pgsandbox.cli.options import find_ini_file as find_ini
    from pytest_pgsandbox.cli.options import flags
    from pytest_pgsandbox.cli.options import load_settings

    _ini, ini_file = find_ini(Path.cwd())
    base = Path(ini_file).parent if Path(ini_file).is_file() else Path.cwd()
    return load_settings(flags(args)), base


def _folder(settings: Settings, base: Path) -> Path:
    folder = settings.scenarios_dir or scenario.DEFAULT_DIR
    return folder if folder.is_absolute() else base / folder


def _url(settings: Settings, command: str) -> ConnInfo:
    if not settings.url:
        raise ScenarioError(
            f"pgsandbox scenario {command} needs a database: give --url URL (e.g. your local "
            "development database), or set PGSANDBOX_URL."
        )
    return ConnInfo.from_conninfo(settings.url)


def _where(info: ConnInfo) -> str:
    return f"database {info.dbname!r} on {mask(info.url())}"


def cmd_export(args: argparse.Namespace) -> int:
    settings, base = _settings(args)
    info = _url(settings, "export")
    folder = _folder(settings, base)
    began = time.monotonic()
    with connect(info, timeout=settings.start_timeout) as conn:
        found = scenario.export(
            conn,
            folder,
            args.name,
            tables=args.tables or (),
            exclude=args.exclude or (),
            extends=args.extends,
        )
    rows = sum(t.rows for t in found.tables)
    print(
        f"exported scenario {args.name} from {_where(info)}: {len(found.tables)} tables, "
        f"{rows} rows, {len(found.sequences)} sequences in {time.monotonic() - began:.2f} s"
    )
    if args.extends:
        print(f"  extends {args.extends}: tables with the same rows there are not repeated")
    print(f"  -> {folder / args.name}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    settings, base = _settings(args)
    info = _url(settings, "load")
    chain = scenario.find(_folder(settings, base), args.name)
    began = time.monotonic()
    with connect(info, autocommit=False, timeout=settings.start_timeout) as conn:
        busy = scenario.occupied(conn, chain)
        if busy and not args.replace:
            shown = ", ".join(f"{table} ({rows} rows)" for table, rows in busy)
            conn.rollback()
            raise ScenarioError(
                f"loading {args.name} into {_where(info)} would delete the rows of: {shown}. "
                "Nothing was changed. Pass --replace to replace them."
            )
        loaded = scenario.load(conn, chain, _where(info))
        conn.commit()
    print(
        f"loaded scenario {args.name} into {_where(info)}: {loaded.tables} tables, "
        f"{loaded.rows} rows in {time.monotonic() - began:.2f} s"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    settings, base = _settings(args)
    folder = _folder(settings, base)
    found = scenario.names(folder)
    if not found:
        print(f"no scenarios in {folder}; make one with: pgsandbox scenario export NAME --url URL")
        return 0
    print(f"scenarios in {folder}:")
    for name in found:
        try:
            chain = scenario.find(folder, name)
        except ScenarioError as exc:
            print(f"  {name}: unreadable: {exc}")
            continue
        own = chain.scenarios[-1]
        rows = sum(t.rows for _s, t in chain.tables().values())
        extends = f", extends {own.extends}" if own.extends else ""
        print(f"  {name}: {len(chain.tables())} tables, {rows} rows{extends}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Load every scenario (or those named) on top of the schema template, as tests would."""
    from pytest_pgsandbox._engine.naming import new_run_id
    from pytest_pgsandbox._engine.sandbox import Sandbox

    settings, base = _settings(args)
    folder = _folder(settings, base)
    wanted = args.names or scenario.names(folder)
    if not wanted:
        print(f"no scenarios in {folder}")
        return 0
    sandbox = Sandbox(settings, new_run_id(), base=base)
    sandbox.scenarios_wanted = True  # a new local server's cache then holds them all
    failed = 0
    try:
        sandbox.ensure_server()
        schema = sandbox.template.fingerprint[:12] if sandbox.template else "none configured"
        print(f"schema template: {schema}")
        for name in wanted:
            try:
                sandbox.scenario_template(sandbox.template, name)
                print(f"  ok      {name}")
            except PgSandboxError as exc:
                failed += 1
                print(f"  FAILED  {name}: {exc}")
    finally:
        sandbox.close()
    print(f"{len(wanted) - failed} of {len(wanted)} scenarios fit the schema")
    return 1 if failed else 0


def cmd_diff(args: argparse.Namespace) -> int:
    settings, base = _settings(args)
    info = _url(settings, "diff")
    chain = scenario.find(_folder(settings, base), args.name)
    with (
        connect(info, timeout=settings.start_timeout) as conn,
        tempfile.TemporaryDirectory(prefix="pgsandbox-diff-") as scratch,
    ):
        lines = scenario.diff(conn, chain, Path(scratch))
    if not lines:
        print(f"{_where(info)} holds exactly scenario {args.name}")
        return 0
    print(f"{_where(info)} differs from scenario {args.name}:")
    for line in lines:
        print(f"  {line}")
    return 1


def register(
    sub: Any, add_setting_flags: Callable[[argparse.ArgumentParser, Sequence[str]], None]
) -> None:
    """Add ``scenario`` and its commands to the ``pgsandbox`` parser."""
    top = sub.add_parser("scenario", help="export, load, list, check and diff data scenarios")
    commands = top.add_subparsers(dest="scenario_command", required=True, metavar="COMMAND")
    timeout = ("start_timeout",)

    p = commands.add_parser("export", help="write a database's rows as scenario NAME")
    p.add_argument("name", metavar="NAME", help="the scenario's name, e.g. billing/pro")
    add_setting_flags(p, ("url", "scenarios_dir", *timeout))
    p.add_argument(
        "--tables",
        nargs="+",
        metavar="PATTERN",
        help="only these tables (schema.table or table; * and ? work)",
    )
    p.add_argument(
        "--exclude",
        nargs="+",
        metavar="PATTERN",
        help="never these tables (their rows stay out of the files)",
    )
    p.add_argument(
        "--extends",
        metavar="PARENT",
        help="write only the tables whose rows differ from scenario PARENT's",
    )
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("load", help="replace a database's rows with scenario NAME's")
    p.add_argument("name", metavar="NAME")
    add_setting_flags(p, ("url", "scenarios_dir", *timeout))
    p.add_argument("--replace", action="store_true", help="delete rows the tables already hold")
    p.set_defaults(func=cmd_load)

    p = commands.add_parser("list", help="list the scenarios")
    add_setting_flags(p, ("scenarios_dir",))
    p.set_defaults(func=cmd_list)

    p = commands.add_parser("check", help="load every scenario onto the current schema template")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these scenarios")
    add_setting_flags(
        p,
        (
            "url",
            "scenarios_dir",
            "schema",
            "seed",
            "extensions",
            "bin_dir",
            "runtime_dir",
            "cache_dir",
            *timeout,
        ),
    )
    p.set_defaults(func=cmd_check)

    p = commands.add_parser("diff", help="compare a database's rows with scenario NAME's")
    p.add_argument("name", metavar="NAME")
    add_setting_flags(p, ("url", "scenarios_dir", *timeout))
    p.set_defaults(func=cmd_diff)
