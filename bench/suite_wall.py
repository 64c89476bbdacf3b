"""Wall time of a whole suite under pytest-xdist, for each isolation strategy.

    python bench/suite_wall.py [--tests 1000] [--workers 0,2,4] [--out DIR]

The isolation benchmark's workload (30 tables, 2,010 rows); half the tests read two counts,
half write a row into 2 of the 30 tables and commit. Each isolation runs the same suite with
``-n 0`` (no xdist), ``-n 2`` and ``-n 4``, interleaved, on one reusable server; the figure
is the time from launching pytest to the last test's end (start-up and template included).
On 2 cores, more workers than cores only add contention: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import report
from isolation import CLI
from isolation import _start
from isolation import schema_sql
from run import project_with
from run import session

SUITE = (
    "import pytest\n\n@pytest.mark.parametrize('n', range({n}))\ndef test_t(pg, n):\n"
    "    if n % 2:\n"
    "        pg.execute(\"INSERT INTO t03 (name, parent_id) VALUES ('Bob Okafor', 1)\")\n"
    "        pg.execute(\"INSERT INTO t17 (name, parent_id) VALUES ('Carmen Ruiz', 2)\")\n"
    "        pg.conn.commit()\n"
    "    else:\n"
    '        pg.execute("SELECT count(*) FROM t03").fetchone()\n'
    '        pg.execute("SELECT count(*) FROM t17").fetchone()\n'
)
ISOLATIONS = ("transaction", "reset", "clone")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=1000, help="tests in the suite")
    parser.add_argument("--workers", default="0,2,4", help="values of -n, comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="sessions per figure (median)")
    parser.add_argument("--bin-dir", default="embedded", help="PostgreSQL binaries to use")
    parser.add_argument("--out", help="also write the figures to OUT/suite.json (summary.py)")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]

    from pytest_pgsandbox._engine.servers import places

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PGSANDBOX_")}
    home = Path(tempfile.mkdtemp(prefix="pgsb-bench-suite-", dir=places.ram_dir() or None))
    home.chmod(0o755)
    env = {**base_env, "PGSANDBOX_RUNTIME_DIR": str(home / "rt"), "PGSANDBOX_BIN_DIR": args.bin_dir}
    project = project_with({"test_suite.py": SUITE.format(n=args.tests)})
    (project / "schema.sql").write_text(schema_sql())
    (project / "pytest.ini").write_text("[pytest]\npg_schema = sql:schema.sql\n")
    walls: dict[tuple[str, int], list[float]] = {
        (isolation, n): [] for isolation in ISOLATIONS for n in workers
    }
    try:
        _start(env)
        session(project, env, "--pg-reuse")  # the template, built once beforehand
        for _ in range(args.repeat):
            for isolation, n in walls:  # interleaved: the same noise for all
                m = session(project, env, "--pg-reuse", f"--pg-isolation={isolation}", "-n", str(n))
                walls[isolation, n].append(m["last"] - m["launched"])
    finally:
        import subprocess

        subprocess.run([*CLI, "stop"], env=env, check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(project, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)

    wall = {key: statistics.median(values) for key, values in walls.items()}
    print(
        f"pytest-pgsandbox suite wall time: {args.tests} tests (half write), launch to last "
        f"test, medians of {args.repeat}\n"
    )
    print(f"{'':<14}" + "".join(f"{f'-n {n}':>16}" for n in workers))
    rows = []
    for isolation in ISOLATIONS:
        base = wall[isolation, workers[0]]
        cells = []
        for n in workers:
            value = wall[isolation, n]
            ratio = f" ({base / value:.2f}x)" if n != workers[0] else ""
            cells.append(f"{value:.1f} s{ratio}")
            rows.append(
                {"variant": f"{isolation}, -n {n}", "read": value, "write": None, "unit": "s"}
            )
        print(f"{isolation:<14}" + "".join(f"{c:>16}" for c in cells))
    title = f"suite of {args.tests} tests, wall time"
    report.save(args.out, "suite", title, "embedded PostgreSQL", rows)
    print()
    print(report.markdown([{**report.machine(), "title": title, "server": "", "rows": rows}]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
