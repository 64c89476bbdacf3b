"""Flask-Migrate projects as ``flask db init`` and ``flask db migrate`` write them build the
template through ``flask:MODULE:FACTORY``, with env.py and the app's code unedited.

The migrations folder of each project here is made by Flask-Migrate's own commands in the
test's folder (so env.py, alembic.ini and the revision are Flask-Migrate's, not ours); the
app's own database is a SQLite file, as in Flask-SQLAlchemy's quick start, and it must stay
untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("flask_migrate")

APP = """
import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()
migrate = Migrate()


class Item(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(80), nullable=False)
{more_models}

def create_app():
    app = Flask(__name__)
    # The app's own database; the tests of the project point it elsewhere with APP_URL.
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("APP_URL", "sqlite:///app.db")
    {more_config}
    db.init_app(app)
    migrate.init_app(app, db)
    return app
"""

TESTS = """
from app import Item


def test_the_migration_ran(pg):
    assert pg.fetchval("SELECT count(*) FROM item") == 0
    assert len(pg.fetchval("SELECT version_num FROM alembic_version")) == 12


def test_the_app_on_the_test_database(pg, monkeypatch):
    # The recipe of the docs: the app's own engine on the test's database (reset isolation).
    from app import create_app, db

    monkeypatch.setenv("APP_URL", pg.url.replace("postgresql://", "postgresql+psycopg://", 1))
    app = create_app()
    with app.app_context():
        db.session.add(Item(name="first"))
        db.session.commit()
        assert db.session.scalars(db.select(Item.name)).all() == ["first"]
        db.engine.dispose()
    assert pg.fetchval("SELECT name FROM item") == "first"
"""


def flask_cli(folder: Path, *args: str) -> None:
    flask = Path(sys.executable).with_name("flask")
    env = {**os.environ, "FLASK_APP": "app"}
    subprocess.run(
        [str(flask), *args], cwd=folder, env=env, check=True, capture_output=True, timeout=60
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str, str], Path]:
    """Projects made by ``flask db init [--multidb]`` and ``flask db migrate``, once each."""
    done: dict[tuple[str, str, str], Path] = {}

    def make(more_models: str, more_config: str, init: str) -> Path:
        key = (more_models, more_config, init)
        if key not in done:
            folder = tmp_path_factory.mktemp("flask-project")
            (folder / "app.py").write_text(
                APP.format(more_models=more_models, more_config=more_config)
            )
            flask_cli(folder, "db", "init", *([init] if init else []))
            flask_cli(folder, "db", "migrate", "-m", "items")
            shutil.rmtree(folder / "__pycache__", ignore_errors=True)
            done[key] = folder
        return done[key]

    return make


@pytest.fixture
def project(
    pytester: pytest.Pytester, made: Callable[[str, str, str], Path]
) -> Callable[..., Path]:
    """The test's copy of a made project; returns the app's own SQLite file, which
    Flask-Migrate's commands created and which is removed: whatever creates it again has
    used the app's own database."""

    def copy(more_models: str = "", more_config: str = "", init: str = "") -> Path:
        shutil.copytree(made(more_models, more_config, init), pytester.path, dirs_exist_ok=True)
        ini = (pytester.path / "migrations" / "alembic.ini").read_text()
        assert "script_location" not in ini, "Flask-Migrate's layout changed"
        env = (pytester.path / "migrations" / "env.py").read_text()
        assert "\nfileConfig(config.config_file_name)" in env, "Flask-Migrate's layout changed"
        assert "current_app" in env
        app_db = pytester.path / "instance" / "app.db"
        assert app_db.is_file()
        app_db.unlink()
        pytester.makeini("[pytest]\npythonpath = .\npg_schema = flask:app:create_app\n")
        return app_db

    return copy


def test_a_flask_migrate_project_builds_its_template_unedited(
    pytester: pytest.Pytester, runtime: Path, project: Callable[..., Path]
) -> None:
    app_db = project()
    pytester.makepyfile(test_items=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pg-isolation=reset")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*template built*"])
    assert not app_db.exists(), "the app's own SQLite database was used"


def test_a_bind_to_another_database_is_refused(
    pytester: pytest.Pytester, runtime: Path, project: Callable[..., Path]
) -> None:
    # `flask db init --multidb` migrates every bind: a bind keeps its own URL, so the
    # migration of that database is refused before it connects, and nothing is created there.
    project(
        more_models=(
            "\n\nclass Audit(db.Model):\n    __bind_key__ = 'audit'\n"
            "    id = db.Column(db.Integer, primary_key=True)\n"
        ),
        more_config='app.config["SQLALCHEMY_BINDS"] = {"audit": "sqlite:///audit.db"}',
        init="--multidb",
    )
    audit_db = pytester.path / "instance" / "audit.db"
    audit_db.unlink()
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out
    result.stdout.fnmatch_lines(
        [
            "*flask:app:create_app: while the template was being built, code it ran tried to "
            "connect to a sqlite database (*/instance/audit.db)*",
            "*binds (SQLALCHEMY_BINDS)*",
        ]
    )
    assert out.count("while the template was being built") == 1
    assert not audit_db.exists()


def test_flask_migrate_s_sys_exit_is_one_clear_error(
    pytester: pytest.Pytester, runtime: Path, project: Callable[..., Path]
) -> None:
    # Two heads (a branch nobody merged): Flask-Migrate logs Alembic's error, then exits.
    project()
    (revision,) = (pytester.path / "migrations" / "versions").glob("*.py")
    text = revision.read_text()
    (first,) = re.findall(r"^revision = '(\w+)'", text, re.M)
    (revision.parent / "0002_other.py").write_text(text.replace(first, "0002other"))
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out
    result.stdout.fnmatch_lines(
        [
            "*flask:app:create_app: Flask-Migrate's upgrade failed: Multiple head revisions "
            "are present* (it then called sys.exit(1))*"
        ]
    )
    assert out.count("Flask-Migrate's upgrade failed") == 1


def test_a_flask_sqlalchemy_db_as_metadata_and_a_callable_that_calls_sys_exit(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    # metadata:app:db takes Flask-SQLAlchemy's db (no app needed); the seed sees its table,
    # then exits: one clear error, not an INTERNALERROR.
    pytester.makepyfile(app=APP.format(more_models="", more_config=""))
    pytester.makepyfile(
        seedmod=(
            "import sys\n\n"
            "def load(conn):\n"
            "    conn.execute('INSERT INTO item (name) VALUES (%s)', ['seeded'])\n"
            "    sys.exit(1)\n"
        )
    )
    pytester.makeini(
        "[pytest]\npythonpath = .\npg_schema = metadata:app:db\npg_seed = callable:seedmod:load\n"
    )
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out
    result.stdout.fnmatch_lines(["*callable:seedmod:load called sys.exit(1)*"])
    assert out.count("called sys.exit(1)") == 1
