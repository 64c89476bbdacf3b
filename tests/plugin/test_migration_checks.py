"""check_migrations: the checks of an Alembic history as items, their cache, planted defects.

Each project's env.py carries a token of its own, so its history (and the template's hash)
is new to the shared cache: the first run really walks it.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

CHECKS = ["single_head", "upgrade", "up_down", "downgrade_leaves_no_trace", "models_match"]

ENV = """\
# {token}
import os
from alembic import context
from sqlalchemy import engine_from_config, pool
from app_models import Base

url = context.config.get_main_option("sqlalchemy.url")
with open(os.path.join(os.path.dirname(__file__), "..", "env_runs.txt"), "a") as f:
    f.write("run in " + url.split("?")[0].rsplit("/")[-1] + "\\n")
config = context.config
engine = engine_from_config(config.get_section(config.config_ini_section, {{}}),
                            prefix="sqlalchemy.", poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
"""

MODELS = """\
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.Text, nullable=False)
    email = sa.Column(sa.Text, index=True)
{extra}

class Order(Base):
    __tablename__ = "orders"
    id = sa.Column(sa.Integer, primary_key=True)
    user_id = sa.Column(sa.Integer, sa.ForeignKey("users.id"), nullable=False)
    status = sa.Column(sa.Enum("new", "paid", name="order_status"), nullable=False)
"""

REVISION = '''\
"""{doc}"""
import sqlalchemy as sa
from alembic import op

revision = {rev!r}
down_revision = {down!r}


def upgrade():
{up}


def downgrade():
{down_body}
'''

USERS_UP = """\
    op.create_table("users", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.Text, nullable=False))"""
EMAIL_UP = """\
    op.add_column("users", sa.Column("email", sa.Text))
    op.create_index("ix_users_email", "users", ["email"])"""
EMAIL_DOWN = """\
    op.drop_index("ix_users_email", "users")
    op.drop_column("users", "email")"""
ORDERS_UP = """\
    op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
                    sa.Column("status", sa.Enum("new", "paid", name="order_status"),
                              nullable=False))
    op.execute("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql "
               "AS $$ BEGIN RETURN NEW; END $$")
    op.execute("CREATE TRIGGER orders_touch BEFORE UPDATE ON orders "
               "FOR EACH ROW EXECUTE FUNCTION touch()")"""
ORDERS_DOWN = """\
    op.drop_table("orders")
    op.execute("DROP FUNCTION touch()")
    op.execute("DROP TYPE order_status")"""

GOOD = [
    ("0001", None, "create users", USERS_UP, '    op.drop_table("users")'),
    ("0002", "0001", "add email", EMAIL_UP, EMAIL_DOWN),
    ("0003", "0002", "create orders", ORDERS_UP, ORDERS_DOWN),
]

CONFTEST = """
import json, os

def pytest_runtest_logreport(report):
    if report.nodeid.startswith("alembic:"):
        with open(os.path.join(os.path.dirname(__file__), "durations.jsonl"), "a") as f:
            f.write(json.dumps([report.nodeid, report.when, report.duration]) + "\\n")
"""


ENV_WITHOUT_MODELS = ENV.replace("from app_models import Base\n", "").replace(
    "target_metadata=Base.metadata", "target_metadata=None"
)

Revision = tuple[str, str | tuple[str, ...] | None, str, str, str]


def make_project(
    pytester: pytest.Pytester,
    revisions: list[Revision],
    extra_model: str = "",
    env: str = ENV,
    ini: str = "",
) -> Path:
    root = pytester.path
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\nsqlalchemy.url = postgresql://\n"
    )
    (root / "migrations" / "env.py").write_text(env.format(token=uuid.uuid4().hex))
    (root / "app_models.py").write_text(MODELS.format(extra=extra_model))
    for rev, down, doc, up, down_body in revisions:
        (versions / f"{rev}_step.py").write_text(
            REVISION.format(doc=doc, rev=rev, down=down, up=up, down_body=down_body)
        )
    pytester.makeini(
        "[pytest]\npythonpath = .\npg_schema = alembic:alembic.ini\npg_check_migrations = true\n"
        + ini
    )
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_app="def test_users(pg):\n    pg.execute('SELECT 1 FROM users')\n")
    return root


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """check -> its verbose status word(s), from ``-v`` output."""
    found = {}
    for line in result.outlines:
        for check in CHECKS:
            if line.startswith(f"alembic:alembic.ini::{check} ") and check not in found:
                word = line.split(f"::{check} ", 1)[1]
                found[check] = re.sub(r"\s*\[\s*\d+%\]\s*$", "", word).strip()
    return found


DATA_TEST = """
def test_rows_through_a_migration(pg_migrations):
    pg_migrations.upgrade("0001")
    pg_migrations.execute("INSERT INTO users (name) VALUES ('Alice Chen')")
    pg_migrations.upgrade("0002")
    assert pg_migrations.execute("SELECT name, email FROM users").fetchall() == [
        ("Alice Chen", None)
    ]
    pg_migrations.downgrade("0001")
    assert pg_migrations.current() == {"0001"}
    assert pg_migrations.execute("SELECT count(*) FROM users").fetchone() == (1,)
"""


def test_checks_pass_then_come_from_the_cache_once_per_run_under_xdist(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    root = make_project(pytester, GOOD)
    pytester.makepyfile(test_data=DATA_TEST)
    first = pytester.runpytest_subprocess("-v", "-n", "2", "-p", "no:randomly")
    first.assert_outcomes(passed=7)
    # env.py ran once for the one walk (not one per worker) and three times for the data
    # test's upgrades and downgrade; and for the template's build, into a database named
    # "..._building" (a second build, for the cluster cache, may also come at the run's end).
    runs = (root / "env_runs.txt").read_text().splitlines()
    builds = [run for run in runs if run.endswith("_building")]
    assert len(runs) - len(builds) == 4, runs
    assert 1 <= len(builds) <= 2, runs
    (root / "test_data.py").unlink()
    first.stdout.re_match_lines([r".*PASSED for [0-9a-f]{12} alembic:alembic.ini::up_down"])
    assert ", cached" not in first.stdout.str()

    (root / "durations.jsonl").unlink()
    second = pytester.runpytest_subprocess("-v")
    second.assert_outcomes(passed=6)
    status = outcomes(second)
    assert set(status) == set(CHECKS)
    assert all(s.startswith("PASSED for ") and s.endswith(", cached") for s in status.values())
    assert (root / "env_runs.txt").read_text().splitlines() == runs  # not even a build
    lines = (root / "durations.jsonl").read_text().splitlines()
    spent = sum(json.loads(line)[2] for line in lines)
    assert spent < 0.5, f"cached checks took {spent * 1000:.0f} ms"

    # One migration changed: the checks run again (for the new hash), -k selects them.
    step = root / "migrations" / "versions" / "0002_step.py"
    step.write_text(step.read_text() + "# reviewed\n")
    third = pytester.runpytest_subprocess("-v", "-k", "not models_match")
    third.assert_outcomes(passed=5, deselected=1)
    status = outcomes(third)
    assert "models_match" not in status
    assert all(s.startswith("PASSED for ") and "cached" not in s for s in status.values())
    new = (root / "env_runs.txt").read_text().splitlines()[len(runs) :]
    assert len([run for run in new if not run.endswith("_building")]) == 1, new  # the walk
    assert 1 <= len([run for run in new if run.endswith("_building")]) <= 2, new


def test_two_heads_and_traces_fail_only_their_checks(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    # Two branches from 0001, whose downgrades each leave something behind.
    revisions = [
        GOOD[0],
        ("0002", "0001", "add email", EMAIL_UP, '    op.drop_index("ix_users_email", "users")'),
        ("0003", "0001", "create orders", ORDERS_UP, '    op.drop_table("orders")'),
    ]
    make_project(pytester, revisions)
    result = pytester.runpytest_subprocess("-v")
    result.assert_outcomes(passed=4, failed=2)
    status = outcomes(result)
    failing = {"single_head", "downgrade_leaves_no_trace"}
    assert {c for c in CHECKS if status[c] == "FAILED"} == failing
    assert all(status[c].startswith("PASSED for ") for c in CHECKS if c not in failing)
    result.stdout.fnmatch_lines(
        [
            "alembic:alembic.ini: the history has 2 heads, where one is expected:",
            "  0002 (add email) in *0002_step.py, after 0001",
            "  0003 (create orders) in *0003_step.py, after 0001",
            '*alembic merge -m "merge heads" heads*',
        ]
    )
    text = result.stdout.str()
    traces = {}
    for part in text.split("after the downgrade of ")[1:]:
        traces[part[:4]] = part.split("\n_")[0].split("\n=")[0]
    assert set(traces) == {"0002", "0003"}
    assert "+ function public.touch()" in traces["0003"]
    assert "+ type public.order_status: e new,paid" in traces["0003"]
    assert "email" not in traces["0003"]
    assert "+ column public.users.email: text" in traces["0002"]
    assert "index" not in traces["0002"]  # dropped by the downgrade: no trace


def test_failing_downgrade_and_missing_model_column_fail_their_checks(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    revisions = [
        GOOD[0],
        ("0002", "0001", "add email", EMAIL_UP, '    op.drop_column("users", "e_mail")'),
        GOOD[2],
    ]
    make_project(pytester, revisions, extra_model="    nickname = sa.Column(sa.String(40))\n")
    result = pytester.runpytest_subprocess("-v")
    result.assert_outcomes(passed=3, failed=2, skipped=1)
    status = outcomes(result)
    assert status["up_down"] == "FAILED"
    assert status["models_match"] == "FAILED"
    assert status["downgrade_leaves_no_trace"].startswith("SKIPPED")
    assert status["upgrade"].startswith("PASSED")
    result.stdout.fnmatch_lines(
        [
            "alembic:alembic.ini: the downgrade of 0002 (add email) in *0002_step.py failed: "
            '*column "e_mail" of relation "users" does not exist*',
        ]
    )
    result.stdout.fnmatch_lines(
        ["  column users.nickname (VARCHAR(40)): in the models, not made by the migrations"]
    )


# Sessions of one test share a server (as --pg-reuse gives any project): one start-up.
REUSE = ("--pg-reuse", "-p", "no:randomly")

DATA_CONFTEST = """
import pathlib
import sqlalchemy as sa

HERE = pathlib.Path(__file__).parent


def names_kept(conn):
    rows = conn.execute(sa.text("SELECT name, email FROM users ORDER BY id")).all()
    with open(HERE / "checked.txt", "a") as f:
        f.write(repr([tuple(r) for r in rows]) + "\\n")
    assert [tuple(r) for r in rows] == {expected}


def pytest_pgsandbox_migration_data():
    return {{
        "before_revision_data": {{
            "0002": [{{"__tablename__": "users", "name": "Alice Chen"}},
                     {{"__tablename__": "users", "name": "Bo Li"}}],
        }},
        "at_revision_data": {{"0002": names_kept, "0003": {{"__tablename__": "orders",
                                                           "user_id": 1, "status": "paid"}}}},
    }}
"""

DATA_USED_BY_PG_MIGRATIONS = """
def test_the_declared_rows_are_there_at_the_revision(pg_migrations):
    pg_migrations.upgrade("0002")
    assert pg_migrations.execute("SELECT name FROM users ORDER BY id").fetchall() == [
        ("Alice Chen",), ("Bo Li",)
    ]
    pg_migrations.upgrade()
    assert pg_migrations.execute("SELECT status::text FROM orders").fetchall() == [("paid",)]
"""

UNIQUE_NAMES_UP = (
    ORDERS_UP  # noqa: S608 - migration source text, not a query
    + """
    op.execute("UPDATE users SET email = 'same@example.com'")
    op.create_unique_constraint("uq_users_email", "users", ["email"])"""
)


def test_declared_data_goes_through_the_walk_and_pg_migrations(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    root = make_project(pytester, GOOD)
    good = [("Alice Chen", None), ("Bo Li", None)]
    (root / "conftest.py").write_text(CONFTEST + DATA_CONFTEST.format(expected=good))
    pytester.makepyfile(test_data=DATA_USED_BY_PG_MIGRATIONS)
    first = pytester.runpytest_subprocess(*REUSE, "-v")
    first.assert_outcomes(passed=7)
    # The callable ran after 0002 in the walk and in the test's upgrade (not in the build).
    assert (root / "checked.txt").read_text().splitlines() == [repr(good)] * 2
    first.stdout.fnmatch_lines(["*collected 7 items"])

    # Only the data changed: the walk runs again (not cached), and its assertion fails,
    # naming the callable and the revision.
    (root / "checked.txt").unlink()
    wrong = [("Alice Chen", "alice@example.com"), ("Bo Li", None)]
    (root / "conftest.py").write_text(CONFTEST + DATA_CONFTEST.format(expected=wrong))
    second = pytester.runpytest_subprocess(*REUSE, "-v", "-k", "alembic")
    second.assert_outcomes(passed=2, failed=1, skipped=2, deselected=2)
    assert outcomes(second)["upgrade"] == "FAILED"
    # What does not read the data stays cached: the history and the models are unchanged.
    assert outcomes(second)["single_head"].endswith(", cached")
    assert outcomes(second)["models_match"].endswith(", cached")
    second.stdout.fnmatch_lines(
        [
            "alembic:alembic.ini: names_kept() of pytest_pgsandbox_migration_data after the "
            "upgrade of 0002 (add email) in *0002_step.py failed: AssertionError: *",
            "(The walk had put in the data of pytest_pgsandbox_migration_data on its way up.)",
        ]
    )

    # A data migration that fails on the declared rows: the upgrade check names it.
    (root / "conftest.py").write_text(CONFTEST + DATA_CONFTEST.format(expected=good))
    (root / "migrations" / "versions" / "0003_step.py").write_text(
        REVISION.format(
            doc="create orders",
            rev="0003",
            down="0002",
            up=UNIQUE_NAMES_UP,
            down_body=ORDERS_DOWN + '\n    op.drop_constraint("uq_users_email", "users")',
        )
    )
    third = pytester.runpytest_subprocess("-v", "-k", "upgrade or declared_rows")
    third.assert_outcomes(failed=2, deselected=5)
    third.stdout.fnmatch_lines(
        [
            "alembic:alembic.ini: the upgrade of 0003 (create orders) in *0003_step.py failed: "
            "*could not create unique index*",
            "*alembic upgrade heads failed at the upgrade of 0003 (create orders): *unique*",
        ]
    )


# A history with a merge point: 0002 and 0003 branch from 0001, 0004 joins them.
MERGED = [
    GOOD[0],
    ("0002", "0001", "add email", EMAIL_UP, EMAIL_DOWN),
    ("0003", "0001", "create orders", ORDERS_UP, ORDERS_DOWN),
    ("0004", ("0002", "0003"), "merge heads", "    pass", "    pass"),
]


def test_a_merged_history_and_models_from_the_setting(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    # env.py has no target_metadata: migrations_models names the models.
    root = make_project(
        pytester,
        MERGED,
        env=ENV_WITHOUT_MODELS,
        ini="pg_migrations_models = app_models:Base.metadata\n",
    )
    listed = pytester.runpytest_subprocess("--co", "-q", "-k", "up_down or users")
    listed.stdout.fnmatch_lines(
        ["alembic:alembic.ini::up_down", "test_app.py::test_users", "2/6 tests collected *"]
    )
    first = pytester.runpytest_subprocess(*REUSE, "-v")
    first.assert_outcomes(passed=6)
    first.stdout.fnmatch_lines(["*collected 6 items"])
    assert all(s.startswith("PASSED for ") for s in outcomes(first).values())

    # A model column without a migration: only models_match runs again, and fails.
    models = root / "app_models.py"
    models.write_text(MODELS.format(extra="    nickname = sa.Column(sa.String(40))\n"))
    second = pytester.runpytest_subprocess(*REUSE, "-v", "-k", "alembic")
    second.assert_outcomes(passed=4, failed=1, deselected=1)
    status = outcomes(second)
    assert status["models_match"] == "FAILED"
    assert all(status[c].endswith(", cached") for c in CHECKS if c != "models_match")
    second.stdout.fnmatch_lines(
        [
            "alembic:alembic.ini: the models (migrations_models = app_models:Base.metadata) "
            "differ from the database*",
            "  column users.nickname (VARCHAR(40)): in the models, not made by the migrations",
        ]
    )


def test_the_deadline_names_the_step_and_the_setting_and_a_branch_defect_its_revision(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    # The merged history; the downgrade of 0002 (one branch) leaves its column behind, and
    # that of 0001, the last one down, sleeps (the template build only upgrades).
    slow = '    op.execute("SELECT pg_sleep(60)")\n    op.drop_table("users")'
    revisions = [
        ("0001", None, "create users", USERS_UP, slow),
        ("0002", "0001", "add email", EMAIL_UP, '    op.drop_index("ix_users_email", "users")'),
        *MERGED[2:],
    ]
    make_project(pytester, revisions, ini="pg_migrations_timeout = 6\n")
    result = pytester.runpytest_subprocess("-v", "-k", "alembic")
    result.assert_outcomes(passed=3, failed=2, deselected=1)
    status = outcomes(result)
    assert status["up_down"] == "FAILED"
    assert status["downgrade_leaves_no_trace"] == "FAILED"
    result.stdout.fnmatch_lines(
        [
            "alembic:alembic.ini: the walk through the history stopped at its deadline "
            "(migrations_timeout = 6 s), * s after it began, in the downgrade of 0001 "
            "(create users) in *0001_step.py. Raise migrations_timeout *",
        ]
    )
    assert "pg_sleep" not in result.stdout.str()
    text = result.stdout.str()
    assert text.count("after the downgrade of ") == 1
    result.stdout.fnmatch_lines(
        [
            "after the downgrade of 0002 (add email) in *0002_step.py:",
            "  + column public.users.email: text",
        ]
    )
