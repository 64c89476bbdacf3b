"""What a cached migration check's result holds for, besides the template's hash."""

from __future__ import annotations

from pathlib import Path

from pytest_pgsandbox._engine.templates.migration_cache import _hash_files
from pytest_pgsandbox._engine.templates.migration_cache import _keys
from pytest_pgsandbox._engine.templates.migration_cache import _known
from pytest_pgsandbox._engine.templates.migration_cache import models_files
from pytest_pgsandbox._engine.templates.revision_data import parse
from pytest_pgsandbox._engine.templates.template import Source
from pytest_pgsandbox._engine.templates.template import TemplateSpec

ALL = ["single_head", "upgrade", "up_down", "downgrade_leaves_no_trace", "models_match"]


def project(root: Path) -> tuple[TemplateSpec, Source]:
    (root / "migrations").mkdir()
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (root / "migrations" / "env.py").write_text("from app.models import Base\n")
    (root / "app").mkdir()
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "models.py").write_text("from app import columns\nBase = None\n")
    (root / "app" / "columns.py").write_text("NAME = 40\n")
    (root / "other.py").write_text("x = 1\n")
    src = Source("alembic", "alembic.ini")
    return TemplateSpec(schema=(src,), base=root), src


def entry(item: dict[str, object]) -> dict[str, object]:
    return {"status": "passed", "message": "", "seconds": 1.0, "run": "r1", **item}


def test_models_match_holds_for_the_models_files_env_py_imports(tmp_path: Path) -> None:
    spec, src = project(tmp_path)
    keys = _keys(spec, src, ALL, None, None)
    assert set(keys) == {"models_match"}  # without data, the walk's checks read nothing else
    files = models_files(spec, src, None)
    assert sorted(Path(f).name for f in files) == ["__init__.py", "columns.py", "models.py"]
    checks = {
        "models_match": entry(
            {"key": keys["models_match"], "files": files, "files_hash": _hash_files(files)}
        )
    }

    def cached() -> bool:
        return "models_match" in _known(checks, ALL, "f" * 64, "r2", keys)

    assert cached()
    (tmp_path / "other.py").write_text("x = 2\n")  # imported by nothing
    assert cached()
    (tmp_path / "app" / "columns.py").write_text("NAME = 80\n")  # imported by the models
    assert not cached()
    # migrations_models names the models instead: another key.
    named = _keys(spec, src, ALL, None, "app.models:Base.metadata")
    assert named["models_match"] != keys["models_match"]
    assert models_files(spec, src, "app.models:Base.metadata") == files


def test_a_cached_result_holds_only_for_the_same_data(tmp_path: Path) -> None:
    spec, src = project(tmp_path)
    data = parse({"before_revision_data": {"0002": {"__tablename__": "users", "name": "A"}}})
    keys = _keys(spec, src, ["upgrade", "up_down"], data, None)
    assert keys["upgrade"] == keys["up_down"] == data.digest()
    checks = {name: entry({"key": key}) for name, key in keys.items()}
    checks["single_head"] = entry({})
    wanted = ["single_head", "upgrade", "up_down"]
    assert set(_known(checks, wanted, "f" * 64, "r2", keys)) == set(wanted)
    other = _keys(spec, src, wanted, None, None)
    assert set(_known(checks, wanted, "f" * 64, "r2", other)) == {"single_head"}
