"""Per-test cost of each async fixture next to its sync twin.

    python bench/async_fixtures.py [--tests 300] [--repeat 3] [--runner asyncio|anyio]
                                   [--loop-scope function|module|session] [--before DIR]

The isolation benchmark's workload (30 tables, 2,010 rows); each test reads two counts, or
writes a row into 2 of the 30 tables and commits. Sync tests are measured against sync tests
without a database, async ones (pytest-asyncio, a loop per test; or anyio's plugin, with a
session-wide anyio_backend) against async tests without one, so the figure is the fixture's
own cost. ``--loop-scope`` gives pytest-asyncio's tests a wider loop (there ``pg_asyncpg``'s
connection is handed from test to test). Timings on shared machines are noisy: compare the
ratios within one run.

With ``--before DIR`` (a checkout of an earlier version, e.g. ``git worktree add --detach
DIR <commit>``) every figure is measured for that version too, through ``PYTHONPATH``, its
sessions interleaved with this one's on the same server, and printed next to it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import report
from isolation import CLI
from isolation import _start
from isolation import schema_sql
from run import add_before
from run import before_env
from run import project_with
from run import session

SYNC = "import pytest\n\n@pytest.mark.parametrize('n', range({n}))\ndef test_t({args}n):\n"
ASYNC = (
    "import pytest\n\n@pytest.mark.asyncio\n@pytest.mark.parametrize('n', range({n}))\n"
    "async def test_t({args}n):\n"
)
# name: (template, fixture arguments, read body, write body)
VARIANTS: dict[str, tuple[str, str, str, str]] = {
    "no database (sync)": (SYNC, "", "    pass\n", "    pass\n"),
    "pg_conn": (
        SYNC,
        "pg_conn, ",
        '    pg_conn.execute("SELECT count(*) FROM t03").fetchone()\n'
        '    pg_conn.execute("SELECT count(*) FROM t17").fetchone()\n',
        "    pg_conn.execute(\"INSERT INTO t03 (name, parent_id) VALUES ('Bob Okafor', 1)\")\n"
        "    pg_conn.execute(\"INSERT INTO t17 (name, parent_id) VALUES ('Carmen Ruiz', 2)\")\n"
        "    pg_conn.commit()\n",
    ),
    "pg_session": (
        SYNC,
        "pg_session, ",
        '    pg_session.execute(text("SELECT count(*) FROM t03")).scalar()\n'
        '    pg_session.execute(text("SELECT count(*) FROM t17")).scalar()\n',
        "    pg_session.execute(text(\"INSERT INTO t03 (name, parent_id) VALUES ('B', 1)\"))\n"
        "    pg_session.execute(text(\"INSERT INTO t17 (name, parent_id) VALUES ('C', 2)\"))\n"
        "    pg_session.commit()\n",
    ),
    "no database (async)": (ASYNC, "", "    pass\n", "    pass\n"),
    "pg_async_conn": (
        ASYNC,
        "pg_async_conn, ",
        '    await (await pg_async_conn.execute("SELECT count(*) FROM t03")).fetchone()\n'
        '    await (await pg_async_conn.execute("SELECT count(*) FROM t17")).fetchone()\n',
        "    await pg_async_conn.execute(\"INSERT INTO t03 (name, parent_id) VALUES ('B', 1)\")\n"
        "    await pg_async_conn.execute(\"INSERT INTO t17 (name, parent_id) VALUES ('C', 2)\")\n"
        "    await pg_async_conn.commit()\n",
    ),
    "pg_async_session": (
        ASYNC,
        "pg_async_session, ",
        '    (await pg_async_session.execute(text("SELECT count(*) FROM t03"))).scalar()\n'
        '    (await pg_async_session.execute(text("SELECT count(*) FROM t17"))).scalar()\n',
        '    await pg_async_session.execute(text("INSERT INTO t03 (name, parent_id) '
        "VALUES ('B', 1)\"))\n"
        '    await pg_async_session.execute(text("INSERT INTO t17 (name, parent_id) '
        "VALUES ('C', 2)\"))\n"
        "    await pg_async_session.commit()\n",
    ),
    "pg_asyncpg": (
        ASYNC,
        "pg_asyncpg, ",
        '    await pg_asyncpg.fetchval("SELECT count(*) FROM t03")\n'
        '    await pg_asyncpg.fetchval("SELECT count(*) FROM t17")\n',
        "    async with pg_asyncpg.transaction():\n"
        "        await pg_asyncpg.execute(\"INSERT INTO t03 (name, parent_id) VALUES ('B', 1)\")\n"
        "        await pg_asyncpg.execute(\"INSERT INTO t17 (name, parent_id) VALUES ('C', 2)\")\n",
    ),
}
TWIN = {"pg_async_conn": "pg_conn", "pg_async_session": "pg_session", "pg_asyncpg": "pg_conn"}
ANYIO = (
    "\n\nimport pytest\n\n@pytest.fixture(scope='session')\ndef anyio_backend():\n"
    "    return 'asyncio'\n"
)
INI = (
    "[pytest]\npg_schema = sql:schema.sql\nasyncio_default_fixture_loop_scope = function\n"
    "asyncio_default_test_loop_scope = {loop_scope}\n"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=300, help="tests per session")
    parser.add_argument("--repeat", type=int, default=3, help="sessions per figure (median)")
    parser.add_argument("--bin-dir", default="embedded", help="PostgreSQL binaries to use")
    parser.add_argument("--isolation", default="transaction", help="transaction, reset or clone")
    parser.add_argument(
        "--runner",
        default="asyncio",
        choices=("asyncio", "anyio"),
        help="what runs the async tests: pytest-asyncio (a loop per test) or anyio's plugin",
    )
    parser.add_argument(
        "--loop-scope",
        default="function",
        choices=("function", "module", "session"),
        help="pytest-asyncio's loop scope for the tests (default: a loop per test)",
    )
    parser.add_argument("--out", help="also write the figures to OUT/async.json (summary.py)")
    add_before(parser, "measure it too, interleaved, and print both")
    args = parser.parse_args()

    from pytest_pgsandbox._engine.servers import places

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PGSANDBOX_")}
    versions = {"now": base_env}
    earlier = before_env(args.before, base_env, parser)
    if earlier is not None:
        versions = {"before": earlier, "now": base_env}
    home = Path(tempfile.mkdtemp(prefix="pgsb-bench-async-", dir=places.ram_dir() or None))
    home.chmod(0o755)
    env = {**base_env, "PGSANDBOX_RUNTIME_DIR": str(home / "rt"), "PGSANDBOX_BIN_DIR": args.bin_dir}
    projects: dict[tuple[str, str], Path] = {}
    try:
        _start(env)
        for workload in ("read", "write"):
            for name, (template, fixtures, read, write) in VARIANTS.items():
                text = "from sqlalchemy import text\n" + template.format(
                    n=args.tests, args=fixtures
                )
                if args.runner == "anyio":
                    text = text.replace("@pytest.mark.asyncio", "@pytest.mark.anyio")
                project = project_with(
                    {"test_many.py": text + (read if workload == "read" else write)}
                )
                if args.runner == "anyio":
                    with (project / "conftest.py").open("a") as conftest:
                        conftest.write(ANYIO)
                (project / "schema.sql").write_text(schema_sql())
                (project / "pytest.ini").write_text(INI.format(loop_scope=args.loop_scope))
                projects[workload, name] = project
        spans: dict[tuple[str, str, str], list[float]] = {
            (label, workload, name): [] for label in versions for workload, name in projects
        }
        for _ in range(args.repeat):
            for (workload, name), project in projects.items():  # interleaved: the same noise
                for label, version_env in versions.items():
                    run_env = {**env, "PYTHONPATH": version_env.get("PYTHONPATH", "")}
                    m = session(project, run_env, "--pg-reuse", f"--pg-isolation={args.isolation}")
                    spans[label, workload, name].append(
                        (m["last"] - m["first"]) * 1000 / args.tests
                    )
    finally:
        import subprocess

        subprocess.run([*CLI, "stop"], env=env, check=False, stdout=subprocess.DEVNULL)
        for project in projects.values():
            shutil.rmtree(project, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)

    load = os.getloadavg()
    for label in versions:
        per = {
            (workload, name): statistics.median(values)
            for (version, workload, name), values in spans.items()
            if version == label
        }
        rows = _print(args, per, label if len(versions) > 1 else "")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    runner = args.runner
    if runner == "asyncio" and args.loop_scope != "function":
        runner = f"asyncio loop_scope={args.loop_scope}"
    title = f"async fixtures, isolation={args.isolation}, {runner}, {args.tests} tests"
    report.save(
        args.out,
        f"async-{args.isolation}-{runner.replace(' loop_scope=', '-')}",
        title,
        "embedded PostgreSQL",
        rows,
    )
    print()
    print(report.markdown([{**report.machine(), "title": title, "server": "", "rows": rows}]))
    return 0


def _print(
    args: argparse.Namespace, per: dict[tuple[str, str], float], label: str
) -> list[dict[str, Any]]:
    """Print one version's figures; its rows for the report."""
    shown = f" ({label})" if label else ""
    print(
        f"pytest-pgsandbox async fixtures{shown}, isolation={args.isolation}, {args.runner}, "
        f"{args.tests} tests per session, medians of {args.repeat}\n"
    )
    print(f"{'':<22}{'read':>9}{'write':>9}   overhead per test (ms) over the empty test")
    rows = []
    for name, (template, *_rest) in VARIANTS.items():
        base = "no database (sync)" if template is SYNC else "no database (async)"
        if name.startswith("no database"):
            print(f"{name:<22}{per['read', name]:>9.2f}{per['write', name]:>9.2f}   (absolute)")
            continue
        read = per["read", name] - per["read", base]
        write = per["write", name] - per["write", base]
        line = f"{name:<22}{read:>+9.2f}{write:>+9.2f}"
        rows.append({"variant": name, "read": read, "write": write})
        twin = TWIN.get(name)
        if twin:
            twin_read = per["read", twin] - per["read", "no database (sync)"]
            twin_write = per["write", twin] - per["write", "no database (sync)"]
            line += (
                f"   over sync twin {twin}: read {read - twin_read:+.2f}, "
                f"write {write - twin_write:+.2f} ms"
            )
        print(line)
    print()
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
