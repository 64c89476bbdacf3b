"""Named data scenarios on disk: the folder, the manifest, and finding a scenario's chain.

A scenario is a folder ``<scenarios_dir>/<name>/`` (names may contain ``/``) holding::

    manifest.json         format, the scenario it extends, the tables (in foreign-key load
                          order) with their columns, types and row counts, the sequences' values
    data/<schema>.<table>.csv
                          one CSV per table, with a header, rows in primary-key order

Everything is written deterministically (rows ordered by the primary key in the "C"
collation, or by the whole row's text; times in UTC and ISO style; no timestamps in the
manifest), so that exporting what was loaded gives the same bytes and a change to the data
reads well in a diff.

A scenario that ``extends`` another holds only the tables whose rows differ from its parent's
(the whole table, not a patch); loading resolves the chain, parent first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pytest_pgsandbox.errors import ScenarioError

FORMAT = 1
MANIFEST = "manifest.json"
DATA = "data"
DEFAULT_DIR = Path(".pgsandbox") / "scenarios"
BLOCK = 1 << 20  # bytes per COPY block: large tables stream, never held in memory

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
QualName = tuple[str, str]  # (schema, name)


def check_name(name: str) -> str:
    """``name`` if it can name a scenario (letters, digits, ``_.-``, parts joined by ``/``)."""
    if not _NAME.fullmatch(name) or any(part in (".", "..") for part in name.split("/")):
        raise ScenarioError(
            f"{name!r} cannot name a scenario: use letters, digits, '_', '-' and '.', in parts "
            "joined by '/' (e.g. billing/pro); a part may not start with '.' or '-'."
        )
    return name


def qual(key: QualName) -> str:
    return f"{key[0]}.{key[1]}"


# -- the files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableData:
    """One table of a scenario: its file, row count, and columns (name -> type)."""

    schema: str
    name: str
    file: str
    rows: int
    columns: dict[str, str]

    @property
    def key(self) -> QualName:
        return (self.schema, self.name)

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "name": self.name,
            "file": self.file,
            "rows": self.rows,
            "columns": self.columns,
        }


@dataclass(frozen=True)
class SequenceValue:
    schema: str
    name: str
    last_value: int
    is_called: bool

    @property
    def key(self) -> QualName:
        return (self.schema, self.name)

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "name": self.name,
            "last_value": self.last_value,
            "is_called": self.is_called,
        }


@dataclass(frozen=True)
class Scenario:
    """A scenario as found on disk."""

    name: str
    folder: Path
    extends: str | None
    tables: tuple[TableData, ...]
    sequences: tuple[SequenceValue, ...]

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def path(self, table: TableData) -> Path:
        return self.folder / table.file

    @classmethod
    def read(cls, folder: Path, name: str) -> Scenario:
        path = folder / MANIFEST
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT:
                raise ScenarioError(
                    f"scenario {name!r}: {path} is in format {raw.get('format')!r}; this "
                    f"version of pytest-pgsandbox reads format {FORMAT}. Export it again."
                )
            tables = tuple(
                TableData(t["schema"], t["name"], t["file"], int(t["rows"]), dict(t["columns"]))
                for t in raw["tables"]
            )
            sequences = tuple(
                SequenceValue(s["schema"], s["name"], int(s["last_value"]), bool(s["is_called"]))
                for s in raw["sequences"]
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ScenarioError(
                f"scenario {name!r}: cannot read {path}: {type(exc).__name__}: {exc}. Export "
                "the scenario again (pgsandbox scenario export)."
            ) from None
        for table in tables:
            if not (folder / table.file).is_file():
                raise ScenarioError(
                    f"scenario {name!r}: {path} lists {table.file}, which is missing. Export "
                    "the scenario again (pgsandbox scenario export)."
                )
        extends = raw.get("extends")
        return cls(name, folder, str(extends) if extends else None, tables, sequences)

    def write_manifest(self, folder: Path) -> None:
        manifest = {
            "format": FORMAT,
            "extends": self.extends,
            "tables": [t.as_json() for t in self.tables],
            "sequences": [s.as_json() for s in self.sequences],
        }
        text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        (folder / MANIFEST).write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class Chain:
    """A scenario and the ones it extends, root first: what loading it puts in place."""

    scenarios: tuple[Scenario, ...]

    @property
    def name(self) -> str:
        return self.scenarios[-1].name

    def tables(self) -> dict[QualName, tuple[Scenario, TableData]]:
        """Each table's rows as the most derived scenario of the chain has them."""
        found: dict[QualName, tuple[Scenario, TableData]] = {}
        for scenario in self.scenarios:
            for table in scenario.tables:
                found.pop(table.key, None)  # keep the order: a child's tables come after
                found[table.key] = (scenario, table)
        return found

    def sequences(self) -> dict[QualName, SequenceValue]:
        found: dict[QualName, SequenceValue] = {}
        for scenario in self.scenarios:
            found.update((s.key, s) for s in scenario.sequences)
        return found

    def files(self) -> Iterator[Path]:
        for scenario in self.scenarios:
            yield scenario.manifest_path
            yield from (scenario.path(t) for t in scenario.tables)

    def content_hash(self) -> str:
        """A hash of every file of the chain: equal hashes mean equal data."""
        h = hashlib.sha256()
        for scenario in self.scenarios:
            h.update(f"scenario {scenario.name}\n".encode())
            for path in (scenario.manifest_path, *(scenario.path(t) for t in scenario.tables)):
                h.update(f"file {path.name} {path.stat().st_size}\n".encode())
                with path.open("rb") as f:
                    while block := f.read(BLOCK):
                        h.update(block)
        return h.hexdigest()


def names(folder: Path) -> list[str]:
    """The scenarios under ``folder``, sorted."""
    if not folder.is_dir():
        return []
    found = []
    for manifest in folder.rglob(MANIFEST):
        relative = manifest.parent.relative_to(folder)
        if relative.parts and not any(p.startswith(".") for p in relative.parts):
            found.append(relative.as_posix())
    return sorted(found)


def find(folder: Path, name: str) -> Chain:
    """The scenario ``name`` under ``folder`` with the chain of those it extends."""
    chain: list[Scenario] = []
    current: str | None = check_name(name)
    while current is not None:
        if any(s.name == current for s in chain):
            loop = " -> ".join([*(s.name for s in chain), current])
            raise ScenarioError(f"scenario {name!r}: its extends form a loop: {loop}.")
        where = folder / current
        if not (where / MANIFEST).is_file():
            known = names(folder)
            by = f" (extended by {chain[-1].name!r})" if chain else ""
            raise ScenarioError(
                f"no scenario {current!r}{by} in {folder}: there is no {where / MANIFEST}. "
                + (f"Scenarios there: {', '.join(known)}. " if known else "There are none yet. ")
                + "Make one with: pgsandbox scenario export NAME --url URL"
            )
        scenario = Scenario.read(where, current)
        chain.append(scenario)
        current = scenario.extends
    return Chain(tuple(reversed(chain)))


def same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(BLOCK), fb.read(BLOCK)
            if x != y:
                return False
            if not x:
                return True


def file_name(key: QualName) -> str:
    """``data/<schema>.<table>.csv``, with anything unusual in a name %-escaped."""
    return f"{DATA}/{quote(key[0], safe='')}.{quote(key[1], safe='')}.csv"


def replace_files(target: Path, staging: Path) -> None:
    """Put the staged manifest and data in place of ``target``'s (other folders inside it,
    such as scenarios named under it, are left alone)."""
    old = target / f".old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    if (target / DATA).exists():
        (target / DATA).rename(old)
    if (staging / DATA).exists():
        (staging / DATA).rename(target / DATA)
    os.replace(staging / MANIFEST, target / MANIFEST)
    shutil.rmtree(old, ignore_errors=True)
