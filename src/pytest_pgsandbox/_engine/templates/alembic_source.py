"""Alembic sources: the configuration read as Alembic reads it, ``env.py`` run unedited.

A source names ``alembic.ini`` or ``pyproject.toml``. Like Alembic's own command line, the
configuration is both files: ``alembic.ini`` (its ``[alembic]`` section and the logging
sections) and, when there is one beside it, ``pyproject.toml``'s ``[tool.alembic]`` table,
where ``alembic init -t pyproject`` puts ``script_location``. Alembic itself resolves the
script folder from them.

``env.py`` gets what ``alembic upgrade head`` would give it: ``config.config_file_name`` is
the project's ``alembic.ini``, and ``sqlalchemy.url`` is the template's URL. While it runs:

- ``logging.config.fileConfig`` reads the file but changes nothing, so the test run keeps
  its own logging (and pytest's handlers are not closed);
- every connection to another database is refused (:mod:`.guard`);
- afterwards the template must hold the history's heads in its version table, or the
  migrations ran somewhere else.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import logging.config
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_pgsandbox._engine.templates.guard import ForeignConnection
from pytest_pgsandbox._engine.templates.guard import only_to
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import TemplateError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class AlembicFiles:
    """The files an Alembic source is configured by, and its script folder."""

    ini: Path | None
    toml: Path | None
    scripts: Path
    # version_locations outside the script folder (inside it, they are hashed with it).
    versions: tuple[Path, ...] = ()

    def inputs(self) -> list[tuple[str, bytes]]:
        """What the template's hash covers: the ini file, ``[tool.alembic]`` (not the rest of
        pyproject.toml), and every file of the script folder."""
        found: list[tuple[str, bytes]] = []
        if self.ini is not None:
            found.append((self.ini.name, self.ini.read_bytes()))
        if self.toml is not None:
            table = _tool_alembic(self.toml) or {}
            found.append(("[tool.alembic]", json.dumps(table, sort_keys=True).encode()))
        found.extend(
            (str(p.relative_to(self.scripts)), p.read_bytes())
            for p in sorted(self.scripts.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
        for n, folder in enumerate(self.versions):
            found.extend(
                (f"version_locations[{n}]/{p.relative_to(folder)}", p.read_bytes())
                for p in sorted(folder.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            )
        return found


def _tool_alembic(toml: Path) -> dict[str, Any] | None:
    try:
        data = tomllib.loads(toml.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    table = data.get("tool", {}).get("alembic")
    return table if isinstance(table, dict) else None


def _config(files: AlembicFiles | None, ini: Path | None, toml: Path | None) -> Any:
    from alembic.config import Config

    ini = files.ini if files else ini
    toml = files.toml if files else toml
    if toml is None:  # as every Alembic before 1.16 reads it (no toml_file argument there)
        return Config(file_=str(ini) if ini is not None else None)
    return Config(file_=str(ini) if ini is not None else None, toml_file=str(toml))


def _script_folder(ini: Path) -> Path | None:
    """The folder ``script_location`` names, read as Alembic reads it but without importing
    Alembic (a second of every session's start, also when the template is found ready).

    None when only Alembic can tell: a package resource (``myapp:migrations``), a folder
    that is not there, a file it cannot read; Alembic then says why."""
    parser = configparser.ConfigParser({"here": str(ini.parent.absolute())})
    try:
        parser.read(ini, encoding="utf-8")
        location = parser.get("alembic", "script_location")
        if parser.has_option("alembic", "version_locations"):
            return None  # Alembic's own rules split it (they differ between its versions)
    except (configparser.Error, UnicodeDecodeError):
        return None
    folder = Path(location)  # a relative one is relative to the working folder, as in Alembic
    if ":" in location and not folder.is_absolute():
        return None
    return folder if folder.is_dir() else None


def locate(target: Path, shown: str) -> AlembicFiles:
    """The files of the source ``shown`` whose file is ``target``."""
    if not target.is_file():
        raise TemplateError(
            f"{shown}: no such file: {target}. Give the path of alembic.ini (or of the "
            "pyproject.toml with a [tool.alembic] table), relative to the folder pytest runs "
            "in (rootdir) or absolute."
        )
    if target.suffix == ".toml":
        toml: Path | None = target
        ini: Path | None = target.parent / "alembic.ini"
        if _tool_alembic(target) is None:
            raise TemplateError(f"{shown}: {target} has no [tool.alembic] table.")
    else:
        ini = target
        toml = target.parent / "pyproject.toml"
    if ini is not None and not ini.is_file():
        ini = None
    if toml is not None and _tool_alembic(toml) is None:
        toml = None
    if toml is None and ini is not None and (scripts := _script_folder(ini)) is not None:
        return AlembicFiles(ini, None, scripts)
    try:
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError
    except ImportError:
        raise TemplateError(
            f"{shown} needs Alembic: pip install 'pytest-pgsandbox[alembic]'"
        ) from None
    try:
        script = ScriptDirectory.from_config(_config(None, ini, toml))
        scripts = Path(script.dir)
        inside = scripts.resolve()
        versions = tuple(
            folder
            for folder in (Path(v) for v in script.version_locations or ())
            if folder.is_dir() and not folder.resolve().is_relative_to(inside)
        )
    except (CommandError, configparser.Error) as exc:
        read = " and ".join(
            f"{p} ({'[alembic]' if p.suffix != '.toml' else '[tool.alembic]'})"
            for p in (ini, toml)
            if p is not None
        )
        raise TemplateError(f"{shown}: Alembic could not use {read}: {exc}") from None
    return AlembicFiles(ini, toml, scripts, versions)


@contextlib.contextmanager
def logging_left_alone() -> Iterator[None]:
    """``fileConfig`` reads the file (so a broken one still fails) and changes nothing."""
    original = logging.config.fileConfig

    def file_config(fname: Any, *_args: Any, **_kwargs: Any) -> None:
        if isinstance(fname, (str, Path)):
            configparser.ConfigParser().read(fname, encoding="utf-8")

    logging.config.fileConfig = file_config
    try:
        yield
    finally:
        logging.config.fileConfig = original


def upgrade(files: AlembicFiles, shown: str, info: ConnInfo, url: str) -> None:
    """``alembic upgrade heads`` into the database of ``info`` (``url``: its SQLAlchemy URL).

    Every head: a history with two (that check_migrations reports) still builds.
    """
    from alembic import command
    from alembic.script import ScriptDirectory

    config = _config(files, None, None)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    with only_to(info) as guard, logging_left_alone():
        try:
            command.upgrade(config, "heads")
        except ForeignConnection as exc:
            raise TemplateError(f"{shown}: {exc}") from None
        except (Exception, SystemExit) as exc:
            if guard.refused is not None:
                raise TemplateError(f"{shown}: {guard.refused}") from None
            raise TemplateError(
                f"{shown}: alembic upgrade heads failed: "
                f"{what(exc).removeprefix('raised ')}{_where(exc, files)}"
            ) from None
    if guard.refused is not None:  # the user's code caught the refusal
        raise TemplateError(f"{shown}: {guard.refused}")
    check_heads(
        set(ScriptDirectory.from_config(config).get_heads()),
        info,
        f"{shown}: alembic upgrade heads",
        "Check where env.py takes its URL from: it should use "
        'config.get_main_option("sqlalchemy.url"), which pgsandbox sets to the template\'s URL.',
    )


def check_heads(heads: set[str], info: ConnInfo, done: str, fix: str) -> None:
    """The second net: after ``done``, the template's version table holds every head."""
    if heads and not heads <= _versions(info):
        raise TemplateError(
            f"{done} finished, but the template's version table does not hold the "
            f"head{'s' if len(heads) > 1 else ''} ({', '.join(sorted(heads))}): the "
            f"migrations ran on another database. {fix}"
        )


def _versions(info: ConnInfo) -> set[str]:
    """Every value of every ``version_num`` column (the version table may be renamed)."""
    from psycopg import sql

    found: set[str] = set()
    with connect(info) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.columns "
            "WHERE column_name = 'version_num'"
        ).fetchall()
        for schema, table in tables:
            rows = conn.execute(
                sql.SQL("SELECT version_num FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            ).fetchall()
            found.update(str(r[0]) for r in rows)
    return found


def what(exc: BaseException) -> str:
    """What user code did, in one line: ``raised KeyError: 'x'``, ``called sys.exit(1)``."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"raised {type(exc).__name__}: {first}" if first else f"raised {type(exc).__name__}"


def _where(exc: BaseException, files: AlembicFiles) -> str:
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename.startswith(str(files.scripts))
    ]
    return f"\n  in {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
