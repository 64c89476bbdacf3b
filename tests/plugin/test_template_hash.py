"""The template's hash covers what its build reads, and only that.

A ``callable:``/``metadata:`` source counts its own module, the packages above it and the
project modules they import; test files and virtualenvs inside the project never count;
``template_inputs`` adds files and environment variables the build reads behind our back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_pgsandbox._engine.templates.template import Source
from pytest_pgsandbox._engine.templates.template import TemplateSpec
from pytest_pgsandbox._engine.templates.template import coverage
from pytest_pgsandbox._engine.templates.template import fingerprint

SEED = """
from app import settings
from .helpers import rows

def load(conn):
    for name in rows():
        conn.execute("INSERT INTO users (name, password) VALUES (%s, %s)",
                     (name, settings.PASSWORD))
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "settings.py").write_text("import os\nPASSWORD = os.environ.get('FIRST_PW', 'x')\n")
    (app / "helpers.py").write_text("def rows():\n    return ['ada']\n")
    (app / "seed.py").write_text(SEED)
    (app / "unrelated.py").write_text("X = 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_users.py").write_text("def test_x(pg):\n    pass\n")
    venv = tmp_path / ".venv"
    (venv / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "lib" / "python3.11" / "site-packages" / "app.py").write_text("SHADOW = 1\n")
    monkeypatch.syspath_prepend(str(venv / "lib" / "python3.11" / "site-packages"))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def spec(project: Path, *inputs: str) -> TemplateSpec:
    return TemplateSpec(
        schema=(Source("callable", "app.seed:load"),), base=project, inputs=tuple(inputs)
    )


def test_a_callable_counts_its_module_and_the_project_modules_it_imports(project: Path) -> None:
    (line,) = coverage(spec(project))
    for name in ("app/__init__.py", "app/seed.py", "app/settings.py", "app/helpers.py"):
        assert name in line
    assert "unrelated" not in line
    assert "tests/" not in line
    assert ".venv" not in line


def test_editing_what_the_build_reads_changes_the_hash_and_nothing_else_does(
    project: Path,
) -> None:
    before = fingerprint(spec(project), 16)
    (project / "tests" / "test_users.py").write_text("def test_y(pg):\n    pass\n")
    (project / "app" / "unrelated.py").write_text("X = 2\n")
    site = project / ".venv" / "lib" / "python3.11" / "site-packages"
    (site / "newlib.py").write_text("print('installed later')\n")
    assert fingerprint(spec(project), 16) == before
    (project / "app" / "helpers.py").write_text("def rows():\n    return ['ada', 'bo']\n")
    assert fingerprint(spec(project), 16) != before


def test_declared_inputs_count(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "data").mkdir()
    (project / "data" / "users.csv").write_text("name\nada\n")
    declared = spec(project, "env:FIRST_PW", "data/*.csv")
    monkeypatch.setenv("FIRST_PW", "one")
    first = fingerprint(declared, 16)
    monkeypatch.setenv("FIRST_PW", "two")
    second = fingerprint(declared, 16)
    assert second != first
    (project / "data" / "users.csv").write_text("name\nada\nbo\n")
    assert fingerprint(declared, 16) != second
    assert "one" not in "".join(coverage(declared))


def test_a_changed_setting_rebuilds_the_template_and_an_edited_test_does_not(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        seedmod=(
            "import os\n"
            "def load(conn):\n"
            "    conn.execute('CREATE TABLE users (password text)')\n"
            "    conn.execute('INSERT INTO users VALUES (%s)', (os.environ['FIRST_PW'],))\n"
        )
    )
    pytester.makeini(
        "[pytest]\npythonpath = .\npg_schema = callable:seedmod:load\n"
        "pg_template_inputs = env:FIRST_PW\n"
    )
    test = (
        "import os\n"
        "def test_pw(pg):\n"
        "    assert pg.fetchval('SELECT password FROM users') == os.environ['FIRST_PW']\n"
    )
    pytester.makepyfile(test_login=test)
    monkeypatch.setenv("FIRST_PW", "first")
    first = pytester.runpytest_subprocess()
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["postgresql: template built: * in *"])
    pytester.makepyfile(test_login=test + "\n# edited\n")
    again = pytester.runpytest_subprocess()
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["postgresql: template reused: *"])
    monkeypatch.setenv("FIRST_PW", "second")
    changed = pytester.runpytest_subprocess()
    changed.assert_outcomes(passed=1)
    changed.stdout.fnmatch_lines(["postgresql: template built: * in *"])
    info = pytester.runpytest_subprocess("--pg-info")
    info.stdout.fnmatch_lines(
        [
            "the template's hash covers*",
            "  schema callable:seedmod:load: seedmod.py",
            "  template_inputs: env:FIRST_PW",
        ]
    )
    assert "second" not in info.stdout.str()
