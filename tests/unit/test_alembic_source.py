"""Alembic sources without a server: where the scripts are found (as Alembic finds them,
without importing it when alembic.ini says where), and what the template's hash covers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_pgsandbox._engine.templates import alembic_source
from pytest_pgsandbox._engine.templates.template import Source
from pytest_pgsandbox._engine.templates.template import TemplateSpec
from pytest_pgsandbox._engine.templates.template import fingerprint

pytest.importorskip("alembic")

INI = "[alembic]\nscript_location = {location}\n{extra}sqlalchemy.url = postgresql://\n"


def _project(base: Path, location: str = "%(here)s/migrations", extra: str = "") -> Path:
    (base / "migrations" / "versions").mkdir(parents=True)
    (base / "migrations" / "env.py").write_text("# env\n")
    (base / "migrations" / "versions" / "0001_a.py").write_text("revision = '0001'\n")
    ini = base / "alembic.ini"
    ini.write_text(INI.format(location=location, extra=extra))
    return ini


def _found_by_alembic(ini: Path) -> Path:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    return Path(ScriptDirectory.from_config(Config(str(ini))).dir).resolve()


@pytest.mark.parametrize("location", ["%(here)s/migrations", "migrations"])
def test_the_script_folder_is_where_alembic_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    ini = _project(tmp_path, location)
    monkeypatch.chdir(tmp_path)  # a relative script_location is relative to the working folder
    files = alembic_source.locate(ini, "alembic:alembic.ini")
    assert files.scripts.resolve() == _found_by_alembic(ini)
    assert ("versions/0001_a.py", b"revision = '0001'\n") in files.inputs()


def test_version_locations_outside_the_script_folder_are_in_the_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "version_locations = %(here)s/migrations/versions %(here)s/plugins/versions\n"
    extra += "path_separator = space\n"
    ini = _project(tmp_path, extra=extra)
    plugin = tmp_path / "plugins" / "versions"
    plugin.mkdir(parents=True)
    (plugin / "0002_b.py").write_text("revision = '0002'\n")
    monkeypatch.chdir(tmp_path)
    spec = TemplateSpec(schema=(Source("alembic", "alembic.ini"),), base=tmp_path)
    first = fingerprint(spec, 15)
    (plugin / "0002_b.py").write_text("revision = '0002'\n# edited\n")
    assert fingerprint(spec, 15) != first
    files = alembic_source.locate(ini, "alembic:alembic.ini")
    assert [p.resolve() for p in files.versions] == [plugin.resolve()]  # the other is inside
