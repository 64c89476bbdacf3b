"""Flask sources without a server: what their hash covers (the factory's project modules and
the migrations folder, not the tests), the settings that name them, the factories accepted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_pgsandbox._engine.templates.template import Source
from pytest_pgsandbox._engine.templates.template import TemplateSpec
from pytest_pgsandbox._engine.templates.template import _hashed_folder
from pytest_pgsandbox._engine.templates.template import coverage
from pytest_pgsandbox._engine.templates.template import fingerprint
from pytest_pgsandbox.errors import SettingError
from pytest_pgsandbox.settings import resolve


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TemplateSpec:
    (tmp_path / "shopapp").mkdir()
    (tmp_path / "shopapp" / "__init__.py").write_text("from shopapp import models\n")
    (tmp_path / "shopapp" / "models.py").write_text("TABLES = 1\n")
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text("# env\n")
    (tmp_path / "migrations" / "versions" / "0001_a.py").write_text("revision = '0001'\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_shop.py").write_text("def test_x(): pass\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    return TemplateSpec(schema=(Source("flask", "shopapp:create_app"),), base=tmp_path)


def test_the_hash_covers_models_and_migrations_not_tests(spec: TemplateSpec) -> None:
    first = fingerprint(spec, 15)
    (spec.base / "tests" / "test_shop.py").write_text("def test_y(): pass\n")
    assert fingerprint(spec, 15) == first
    (spec.base / "shopapp" / "models.py").write_text("TABLES = 2\n")
    second = fingerprint(spec, 15)
    assert second != first
    (spec.base / "migrations" / "versions" / "0002_b.py").write_text("revision = '0002'\n")
    assert fingerprint(spec, 15) != second
    (line,) = coverage(spec)
    assert "shopapp/models.py" in line
    assert "migrations/versions/0002_b.py" in line


def test_a_migrations_folder_elsewhere_needs_template_inputs(spec: TemplateSpec) -> None:
    other = spec.base / "db" / "migrations"
    other.mkdir(parents=True)
    (other / "alembic.ini").write_text("[alembic]\n")
    assert _hashed_folder(spec, spec.base / "migrations")
    assert not _hashed_folder(spec, other)
    covered = TemplateSpec(schema=spec.schema, base=spec.base, inputs=("db/migrations/**/*",))
    assert _hashed_folder(covered, other)


def test_flask_sources_name_module_and_factory() -> None:
    settings = resolve({"schema": ["flask:app:create_app"]}, {}, {})
    assert settings.schema == (("flask", "app:create_app"),)
    assert settings.shown("schema") == "flask:app:create_app"
    with pytest.raises(SettingError, match="flask:MODULE:FACTORY"):
        resolve({"schema": ["flask:app"]}, {}, {})


def test_a_factory_is_asked_for_not_an_app_or_a_function_with_arguments() -> None:
    flask = pytest.importorskip("flask")
    from pytest_pgsandbox._engine.templates.flask_source import _make_app
    from pytest_pgsandbox.errors import TemplateError

    with pytest.raises(TemplateError, match="is a Flask application, made when its module"):
        _make_app("flask:app:app", flask.Flask("app"))
    with pytest.raises(TemplateError, match=r"needs arguments \(config\)"):
        _make_app("flask:app:create_app", lambda config: flask.Flask("app"))
    with pytest.raises(TemplateError, match="returned a dict, not a Flask app"):
        _make_app("flask:app:create_app", dict)
    assert isinstance(_make_app("flask:app:create_app", lambda: flask.Flask("app")), flask.Flask)
