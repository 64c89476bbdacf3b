"""Alembic projects as ``alembic init`` writes them build the template with env.py unedited.

Each project here is made by Alembic's own ``alembic init -t TEMPLATE`` in the test's folder
(so the env.py files are Alembic's, not ours), plus one migration. A second group checks that
an env.py taking its URL from the application's settings cannot migrate another database.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.urls import connect

MIGRATION = '''
"""create items"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
    )
    op.execute("INSERT INTO items (name) VALUES ('first')")


def downgrade():
    op.drop_table("items")
'''

TESTS = """
import logging

def test_the_migration_ran(pg):
    assert pg.fetchval("SELECT name FROM items") == "first"
    assert pg.fetchval("SELECT version_num FROM alembic_version") == "0001"

def test_the_run_keeps_its_own_logging():
    # env.py's fileConfig(alembic.ini) would set the root logger to WARNING and disable
    # existing loggers: the test run's logging must be as pytest set it up.
    assert not logging.getLogger("pgsb.app").disabled
"""


def alembic_init(folder: Path, template: str) -> None:
    alembic = Path(sys.executable).with_name("alembic")
    subprocess.run(
        [str(alembic), "init", "-t", template, "migrations"],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=60,
    )
    (folder / "migrations" / "versions" / "0001_items.py").write_text(MIGRATION)


def project(pytester: pytest.Pytester, template: str, source: str) -> None:
    alembic_init(pytester.path, template)
    pytester.makeini(f"[pytest]\npg_schema = {source}\n")
    pytester.makeconftest("import logging\nlogging.getLogger('pgsb.app')\n")
    pytester.makepyfile(test_items=TESTS)


@pytest.mark.parametrize(
    ("template", "source"),
    [
        ("generic", "alembic:alembic.ini"),
        ("async", "alembic:alembic.ini"),
        ("pyproject", "alembic:alembic.ini"),
        ("pyproject", "alembic:pyproject.toml"),
        ("pyproject_async", "alembic:pyproject.toml"),
    ],
)
def test_env_py_as_alembic_init_writes_it(
    pytester: pytest.Pytester, runtime: Path, template: str, source: str
) -> None:
    project(pytester, template, source)
    # The migration checks walk the history through the same env.py (async ones too); it
    # gives no target_metadata, so there are no models to compare.
    args = ("-p", "no:cacheprovider", "--pg-check-migrations", "-rs")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=6, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED *env.py passes no target_metadata*"])
    assert "INTERNALERROR" not in result.stdout.str()


@pytest.mark.parametrize(
    "variant",
    [
        "assert config.config_file_name is not None\nfileConfig(config.config_file_name)",
        "fileConfig(config.config_file_name)",
    ],
    ids=["assert-then-fileConfig", "unconditional-fileConfig"],
)
def test_env_py_that_always_reads_its_logging_config(
    pytester: pytest.Pytester, runtime: Path, variant: str
) -> None:
    project(pytester, "generic", "alembic:alembic.ini")
    env = pytester.path / "migrations" / "env.py"
    text = env.read_text()
    guarded = "if config.config_file_name is not None:\n    fileConfig(config.config_file_name)"
    assert guarded in text
    env.write_text(text.replace(guarded, variant))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_pyproject_ini_without_script_location_is_read_with_its_toml(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    project(pytester, "pyproject", "alembic:alembic.ini")
    ini = (pytester.path / "alembic.ini").read_text()
    assert "script_location" not in ini.split("[loggers]")[0], "Alembic's layout changed"
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_source_without_script_location_says_which_files_were_read(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    pytester.makefile(".ini", alembic="[alembic]\nsqlalchemy.url = driver://u@h/db\n")
    pytester.makeini("[pytest]\npg_schema = alembic:alembic.ini\n")
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*alembic:alembic.ini: Alembic could not use *alembic.ini*"])
    assert "INTERNALERROR" not in result.stdout.str()


# -- an env.py that takes the application's URL -------------------------------------------

APP_ENV = """
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine

config = context.config
fileConfig(config.config_file_name)

def run_migrations_online():
    # The application's own settings: pgsandbox's URL is ignored.
    engine = create_engine(os.environ["APP_DATABASE_URL"])
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()

run_migrations_online()
"""


def _tables(server: LocalCluster, dbname: str) -> list[str]:
    with connect(server.admin.for_db(dbname)) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("driver", ["postgresql+psycopg", "postgresql+psycopg2"])
def test_env_py_that_connects_to_another_database_is_stopped_before_it_writes(
    pytester: pytest.Pytester,
    runtime: Path,
    existing: LocalCluster,
    monkeypatch: pytest.MonkeyPatch,
    driver: str,
) -> None:
    with connect(existing.admin) as conn:
        conn.execute("CREATE DATABASE devdb")
    project(pytester, "generic", "alembic:alembic.ini")
    (pytester.path / "migrations" / "env.py").write_text(APP_ENV)
    url = existing.admin.for_db("devdb").url().replace("postgresql://", f"{driver}://", 1)
    monkeypatch.setenv("APP_DATABASE_URL", url)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out
    result.stdout.fnmatch_lines(
        [
            "*alembic:alembic.ini: while the template was being built, code it ran tried to "
            f"connect to postgresql://{existing.admin.user}:***@*devdb*",
            "*Such a URL usually comes from the application's own settings*",
            '*config.get_main_option("sqlalchemy.url")*',
        ]
    )
    assert existing.admin.password
    assert existing.admin.password not in out
    assert out.count("while the template was being built") == 1
    assert _tables(existing, "devdb") == [], "nothing may be written to the other database"


def test_a_seed_callable_that_connects_elsewhere_is_refused_too(
    pytester: pytest.Pytester, runtime: Path, existing: LocalCluster
) -> None:
    with connect(existing.admin) as conn:
        conn.execute("CREATE DATABASE devdb2")
    other = existing.admin.for_db("devdb2").url()
    pytester.makepyfile(
        seedmod=(
            "import psycopg\n"
            "def load(conn):\n"
            f"    with psycopg.connect({other!r}) as c:\n"
            "        c.execute('CREATE TABLE leaked (id int)')\n"
        )
    )
    pytester.makeini("[pytest]\npg_seed = callable:seedmod:load\npythonpath = .\n")
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*callable:seedmod:load: while the template was being built*"])
    assert _tables(existing, "devdb2") == []


def test_env_py_that_migrates_an_sqlite_file_is_refused(
    pytester: pytest.Pytester, runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Flask-style default URL: the guard names the kind of database env.py tried.
    project(pytester, "generic", "alembic:alembic.ini")
    (pytester.path / "migrations" / "env.py").write_text(APP_ENV)
    monkeypatch.setenv("APP_DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*tried to connect to a sqlite database*"])


def test_history_that_did_not_reach_the_template_is_an_error(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    # The second net: an env.py that ran no migration on the template's URL (here: none at
    # all) leaves the template without the head in its version table.
    project(pytester, "generic", "alembic:alembic.ini")
    (pytester.path / "migrations" / "env.py").write_text("from alembic import context\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        [
            "*alembic upgrade heads finished, but the template's version table does not hold the "
            "head (0001)*"
        ]
    )
