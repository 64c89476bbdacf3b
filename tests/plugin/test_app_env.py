"""The env setting: an application that reads its settings from the environment at import
time (pydantic-settings) reaches the test database with no change to its code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_pgsandbox._engine.servers import janitor

CONFIG = """
from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    database_url: str
    postgres_password: str


settings = Settings()  # at import time, as applications do
"""

DB = """
import sqlalchemy as sa

from app.config import settings

engine = sa.create_engine(settings.database_url)
"""

SEED = """
import os

import sqlalchemy as sa

from app.config import settings  # made when conftest.py imported the app
from app.db import engine  # the app's pooled engine, on that database


def seed():
    # The application's own seed, as full-stack projects have it: no argument, its own
    # engine, whose URL names the session's database (the variables named it when the
    # settings were made). pgsandbox sends the connection to the template, and ends it
    # after the build: the pool must not keep it for the tests.
    assert settings.database_url != os.environ["DATABASE_URL"]  # they name the template now
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO item (name) VALUES ('from the seed')"))
    other = sa.create_engine(os.environ["DATABASE_URL"])
    with other.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM item")).scalar() == 1
    other.dispose()
"""

CONFTEST = """
import json
import os

from app.db import engine  # imported with conftest.py: the variables are set already


def pytest_sessionfinish(session):
    where = getattr(session.config, "workerinput", {}).get("workerid", "main")
    with open(f"seen-{where}.json", "w") as out:
        json.dump({"password": os.environ["POSTGRES_PASSWORD"], "url": str(engine.url)}, out)
"""

TESTS = """
import os

import pytest
import sqlalchemy as sa

from app.db import engine


def names():
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT name FROM item ORDER BY id")).scalars().all()


@pytest.mark.pg(isolation="reset")
@pytest.mark.parametrize("n", range(3))
def test_the_app_engine_is_on_the_test_database(pg, n):
    assert engine.url.database == pg.info.dbname
    assert names() == ["from the seed"]  # what the template holds, nothing of other tests
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO item (name) VALUES ('committed by the app')"))
    assert pg.fetchval("SELECT count(*) FROM item") == 2


def test_a_test_without_pg_fixtures_reaches_it_too():
    assert names() == ["from the seed"]
"""


def _project(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pydantic_settings")
    pytester.makepyfile(
        **{"app/__init__": "", "app/config": CONFIG, "app/db": DB, "app/seed": SEED},
        conftest=CONFTEST,
        test_app=TESTS,
    )
    (pytester.path / "schema.sql").write_text(
        "CREATE TABLE item (id serial PRIMARY KEY, name text);\n"
    )
    pytester.makeini(
        "[pytest]\n"
        "pythonpath = .\n"
        "pg_isolation = reset\n"
        "pg_schema = sql:schema.sql\n"
        "pg_seed = callable:app.seed:seed\n"
        "pg_env =\n"
        "    DATABASE_URL={sync_url}\n"
        "    POSTGRES_PASSWORD={password}\n"
    )


@pytest.mark.parametrize("workers", [None, 2])
def test_an_app_configured_by_environment(
    pytester: pytest.Pytester, runtime: Path, workers: int | None
) -> None:
    _project(pytester)
    args = ["-p", "no:randomly", "-p", "no:cacheprovider"]
    if workers:
        pytest.importorskip("xdist")
        args += ["-n", str(workers)]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=4)
    seen = [json.loads(p.read_text()) for p in sorted(pytester.path.glob("seen-*.json"))]
    names = {"main"} if workers is None else {"main", "gw0", "gw1"}
    assert {p.name[5:-5] for p in pytester.path.glob("seen-*.json")} == names
    output = result.stdout.str() + result.stderr.str()
    for found in seen:
        assert found["password"]
        assert found["password"] not in output
    # Each worker on a database of its own.
    workers_urls = {p["url"] for p in seen}
    assert len(workers_urls) == len(seen)
    assert "environment set for the session: DATABASE_URL=postgresql+psycopg://" in output
    assert "POSTGRES_PASSWORD=***" in output
    if workers is None:  # the seed's connection to the session's database was redirected
        result.stdout.fnmatch_lines(
            [
                "*template built: * the build's connections to postgresql://*:***@* (the "
                "application's settings name the session's database) went to the template*"
            ]
        )
    assert janitor.records(runtime) == []  # the server started early is stopped too
