"""Settings as the command line reads them: its flags, then the environment, then the
nearest pytest configuration file, as a pytest run would resolve them."""

from __future__ import annotations

import argparse
import configparser
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_pgsandbox.settings import SETTINGS
from pytest_pgsandbox.settings import RawValue
from pytest_pgsandbox.settings import Settings
from pytest_pgsandbox.settings import resolve

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def find_ini_file(start: Path) -> tuple[dict[str, RawValue | None], str]:
    """The ``pg_*`` keys of the pytest configuration file pytest would find from ``start``."""
    names = {s.ini: s for s in SETTINGS}
    for folder in (start, *start.parents):
        for filename, section in (
            ("pytest.ini", "pytest"),
            ("pyproject.toml", None),
            ("tox.ini", "pytest"),
            ("setup.cfg", "tool:pytest"),
        ):
            path = folder / filename
            if not path.is_file():
                continue
            raw: dict[str, object] | None
            if section is None:
                tool = tomllib.loads(path.read_text()).get("tool", {})
                pytest_table = tool.get("pytest", {})
                raw = pytest_table.get("ini_options", pytest_table) if pytest_table else None
            else:
                parser = configparser.ConfigParser(interpolation=None)
                parser.read(path)
                raw = dict(parser[section]) if parser.has_section(section) else None
            if raw is None:
                continue
            values: dict[str, RawValue | None] = {}
            for key, value in raw.items():
                setting = names.get(key)
                if setting is None:
                    continue
                if isinstance(value, list):
                    values[setting.name] = [str(v) for v in value]
                elif setting.repeatable:
                    values[setting.name] = [ln for ln in str(value).splitlines() if ln.strip()]
                else:
                    values[setting.name] = str(value)
            return values, str(path)
    return {}, "the ini file"


def project_folder(start: Path | None = None) -> str:
    """The project a command run here belongs to, as a test run started here would see it
    (pytest's rootdir): the folder of the nearest pytest configuration file, else ``start``."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pytest.ini").is_file() or (folder / ".pytest.ini").is_file():
            return str(folder)
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                if "pytest" in tomllib.loads(pyproject.read_text()).get("tool", {}):
                    return str(folder)
            except (OSError, ValueError):
                pass
        for filename, section in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
            path = folder / filename
            if path.is_file():
                parser = configparser.ConfigParser(interpolation=None)
                try:
                    parser.read(path)
                except configparser.Error:
                    continue
                if parser.has_section(section):
                    return str(folder)
    return str(start)


def load_settings(flags: dict[str, RawValue | None]) -> Settings:
    ini, ini_file = find_ini_file(Path.cwd())
    return resolve(flags, os.environ, ini, ini_file)


def flags(args: argparse.Namespace) -> dict[str, RawValue | None]:
    return {s.name: getattr(args, s.name, None) for s in SETTINGS if getattr(args, s.name, None)}


def add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        s = next(s for s in SETTINGS if s.name == name)
        flag = "--" + name.replace("_", "-")
        if s.repeatable:
            parser.add_argument(flag, dest=name, action="append", metavar=s.metavar, help=s.help)
        elif s.is_flag:
            parser.add_argument(flag, dest=name, action="store_const", const="true", help=s.help)
            parser.add_argument(
                "--no-" + name.replace("_", "-"),
                dest=name,
                action="store_const",
                const="false",
                help=f"turn {flag} off",
            )
        else:
            parser.add_argument(flag, dest=name, metavar=s.metavar, help=s.help)
