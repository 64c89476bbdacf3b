"""The migration checks on 50 migrations: first run, cached run, and pytest-alembic beside.

    python bench/migrations.py [--repeat 3]

The history is ``bench/run.py``'s (30 tables, 50 migrations) with real downgrades and models
that match it. Each round makes the history new (a comment in env.py), then runs two pytest
sessions of one project:

- first: ``--pg-check-migrations`` walks the history (and builds the template);
- cached: the same again, the checks come from the cache.

Both sessions also run pytest-alembic's built-in tests, its four default ones and its
experimental ``test_downgrade_leaves_no_trace`` (pip install 'pytest-pgsandbox[bench]'),
against our server: each of its tests gets an empty database of
its own there, made by the ``alembic_engine`` fixture of the project's conftest. The figures
are the sums of the items' durations (setup, call and teardown) of each tool, per session.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from run import migrations_project

CONFTEST = '''
import json, os, uuid

import pytest
import psycopg
import sqlalchemy
from psycopg import sql


def pytest_runtest_logreport(report):
    with open(os.environ["BENCH_OUT"], "a") as f:
        f.write(json.dumps([report.nodeid, report.when, report.duration]) + "\\n")


@pytest.fixture
def alembic_engine(pg_server):
    """pytest-alembic's database: an empty one of its own on our server."""
    name = "bench_alembic_" + uuid.uuid4().hex[:8]
    admin = pg_server.admin
    with psycopg.connect(admin.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = admin.for_db(name).url().replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    yield engine
    engine.dispose()
    with psycopg.connect(admin.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
'''


# pytest-alembic's built-in tests, imported into a test module as its documentation shows
# (its own collection, --test-alembic, fails on pytest 9.2 in 0.13.1).
BUILT_IN = """
from pytest_alembic.tests import test_model_definitions_match_ddl
from pytest_alembic.tests import test_single_head_revision
from pytest_alembic.tests import test_up_down_consistency
from pytest_alembic.tests import test_upgrade
from pytest_alembic.tests.experimental import test_downgrade_leaves_no_trace
"""


def session(project: Path, env: dict[str, str]) -> dict[str, float]:
    """Seconds each tool's items took in one session (and the session's wall time)."""
    out = project / "durations.jsonl"
    out.unlink(missing_ok=True)
    args = ["-q", "-p", "no:cacheprovider", "--pg-check-migrations"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=project,
        env={**env, "BENCH_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise SystemExit(f"the session failed:\n{done.stdout[-20000:]}")
    sums = {"pgsandbox": 0.0, "pytest-alembic": 0.0}
    for line in out.read_text().splitlines():
        nodeid, _when, seconds = json.loads(line)
        if nodeid.startswith("alembic:"):
            sums["pgsandbox"] += seconds
        elif nodeid.startswith("test_pytest_alembic.py"):
            sums["pytest-alembic"] += seconds
    return sums


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    try:
        import pytest_alembic  # noqa: F401
    except ImportError:
        raise SystemExit("pip install 'pytest-pgsandbox[bench]' (pytest-alembic)") from None
    project = migrations_project(downgrades=True)
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_first.py").unlink()
    (project / "test_pytest_alembic.py").write_text(BUILT_IN)
    runtime = Path(tempfile.mkdtemp(prefix="pgsb-bench-mig-", dir="/dev/shm"))
    runtime.chmod(0o755)
    env = {**os.environ, "PGSANDBOX_RUNTIME_DIR": str(runtime / "rt")}
    env_py = project / "migrations" / "env.py"
    original = env_py.read_text()
    rounds: dict[str, list[float]] = {}
    try:
        for _ in range(args.repeat):
            env_py.write_text(f"# {uuid.uuid4().hex}\n{original}")  # a history never seen
            for label in ("first", "cached"):
                for tool, seconds in session(project, env).items():
                    rounds.setdefault(f"{tool}, {label}", []).append(seconds)
    finally:
        shutil.rmtree(project, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)
    print(f"50 migrations, 30 tables; median of {args.repeat} (seconds in the checks' items):")
    for name, values in rounds.items():
        shown = ", ".join(f"{v:.3f}" for v in values)
        print(f"  {name:<24} {statistics.median(values) * 1000:9.1f} ms   ({shown} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
