"""A suite written for pytest-postgresql, run with it and with only its import changed.

    python bench/postgresql_compat.py [--tests 300] [--repeat 3] [--before DIR]

Needs pytest-postgresql installed (the ``bench`` extra). The suite is the one pytest-postgresql's
README describes: ``postgresql_noproc(host=..., port=..., load=[schema.sql])`` and
``postgresql = factories.postgresql("postgresql_noproc")``; each test reads (two counts) or
writes (a row into each of 2 of 30 tables, then commits), on the workload of
``bench/isolation.py``. As root pytest-postgresql cannot start a server of its own, so both
runs use one server started here (``pgsandbox start``): pytest-postgresql through its
``postgresql_noproc``; the changed import makes that fixture's server the run's server.

Variants, interleaved in the same run (same noise):

- ``pytest-postgresql``: ``from pytest_postgresql import factories``;
- ``import changed``: ``from pytest_pgsandbox.postgresql import factories``, nothing else;
- ``import changed, reset``: also ``factories.postgresql(..., isolation="reset")``;
- ``postgresql_proc``: the same suite written with ``postgresql_proc`` (as pytest-postgresql's
  README starts), which pytest-postgresql cannot run as root: here the local server.

With ``--before DIR`` (a checkout of an earlier version), the changed-import variants run a
second time with that version's plugin, interleaved with the rest.

Per-test overhead: time per test from the first test's start to the last one's end, minus that
of the same number of tests that use no database.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from isolation import CLI
from isolation import READ
from isolation import ROWS
from isolation import TABLES
from isolation import WRITE
from isolation import _start
from isolation import schema_sql
from pytest_pgsandbox._engine.servers import places
from run import add_before
from run import before_env
from run import project_with
from run import session

UPSTREAM_CONFTEST = """
import os
from pathlib import Path

from pytest_postgresql import factories

postgresql_noproc = factories.postgresql_noproc(
    host=os.environ["BENCH_HOST"],
    port=int(os.environ["BENCH_PORT"]),
    user=os.environ["BENCH_USER"],
    password=os.environ.get("BENCH_PASSWORD") or None,
    dbname="bench_ppg",
    load=[Path(__file__).parent / "schema.sql"],
)
postgresql = factories.postgresql("postgresql_noproc"{extra})
"""
TEST = "import pytest\n\n@pytest.mark.parametrize('n', range({n}))\ndef test_t({fixture}n):\n"

PROC_CONFTEST = """
from pathlib import Path

from pytest_pgsandbox.postgresql import factories

postgresql_proc = factories.postgresql_proc(load=[Path(__file__).parent / "schema.sql"])
postgresql = factories.postgresql("postgresql_proc")
"""

# name: (import line replacement, extra client argument)
VARIANTS: dict[str, tuple[str | None, str]] = {
    "no database": (None, ""),
    "pytest-postgresql": ("pytest_postgresql", ""),
    "import changed": ("pytest_pgsandbox.postgresql", ""),
    "import changed, reset": ("pytest_pgsandbox.postgresql", ', isolation="reset"'),
    # The suite as most write it, with postgresql_proc: pytest-postgresql cannot start it as
    # root; here it is the local server (the one started above, found again with reuse).
    "postgresql_proc": ("proc", ""),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=300, help="tests per session")
    parser.add_argument("--repeat", type=int, default=3, help="sessions per figure (median)")
    parser.add_argument("--bin-dir", default="embedded", help="PostgreSQL binaries to use")
    add_before(parser, "measure its changed-import variants too")
    args = parser.parse_args()
    if before_env(args.before, {}, parser) is not None:  # checks the folder
        for name in [n for n in VARIANTS if n.startswith("import changed")]:
            VARIANTS[f"{name} (before)"] = VARIANTS[name]

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PGSANDBOX_")}
    where = places.ram_dir() or tempfile.gettempdir()
    home = Path(tempfile.mkdtemp(prefix="pgsb-bench-ppg-", dir=where))
    home.chmod(0o755)
    env = {**base_env, "PGSANDBOX_RUNTIME_DIR": str(home / "rt"), "PGSANDBOX_BIN_DIR": args.bin_dir}
    try:
        url = _start(env)
        return _measure(args, env, url)
    finally:
        subprocess.run([*CLI, "stop"], env=env, check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)


def _measure(args: argparse.Namespace, env: dict[str, str], url: str) -> int:
    import psycopg

    from pytest_pgsandbox._engine.urls import ConnInfo

    admin = ConnInfo.from_conninfo(url)
    with psycopg.connect(url) as conn:
        major = conn.info.server_version // 10000
    print(
        f"pytest-postgresql suite, import changed: PostgreSQL {major}, {TABLES} tables, "
        f"{TABLES * ROWS} rows, {args.tests} tests per session, medians of {args.repeat}"
    )
    run_env = {
        **env,
        "BENCH_HOST": admin.host,
        "BENCH_PORT": str(admin.port),
        "BENCH_USER": admin.user,
        "BENCH_PASSWORD": admin.password or "",
    }
    earlier = before_env(args.before, run_env) or run_env
    projects = {}
    for workload, body in (("read", READ), ("write", WRITE)):
        for name, (module, extra) in VARIANTS.items():
            fixture = "postgresql, " if module else ""
            text = TEST.format(n=args.tests, fixture=fixture)
            if module:
                text += body.format(conn="postgresql", commit="postgresql.commit()")
            else:
                text += "    pass\n"
            project = project_with({"test_many.py": text, "schema.sql": schema_sql()})
            if module == "proc":
                conftest = PROC_CONFTEST
            elif module:
                conftest = UPSTREAM_CONFTEST.format(extra=extra).replace(
                    "from pytest_postgresql import", f"from {module} import"
                )
            if module:
                (project / "conftest.py").write_text(
                    (project / "conftest.py").read_text() + conftest
                )
            projects[workload, name] = project
    spans: dict[tuple[str, str], list[float]] = {key: [] for key in projects}
    starts: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        for _ in range(args.repeat):
            for (workload, name), project in projects.items():  # interleaved: same noise
                extra_args = ["--pg-reuse"] if VARIANTS[name][0] == "proc" else []
                chosen = earlier if name.endswith("(before)") else run_env
                m = session(project, chosen, *extra_args)
                spans[workload, name].append((m["last"] - m["first"]) * 1000 / args.tests)
                if workload == "read":
                    starts[name].append(m["first"] - m["launched"])
    finally:
        for project in projects.values():
            shutil.rmtree(project, ignore_errors=True)

    per = {key: statistics.median(values) for key, values in spans.items()}
    print(f"\n{'':<34}{'start-up':>10}{'read':>11}{'write':>11}   overhead per test (ms)")
    upstream = {w: per[w, "pytest-postgresql"] - per[w, "no database"] for w in ("read", "write")}
    for name in VARIANTS:
        line = f"{name:<34}{statistics.median(starts[name]):>9.2f}s"
        if name == "no database":
            line += f"{per['read', name]:>10.2f}  {per['write', name]:>9.2f}   (absolute)"
        else:
            cells = [per[w, name] - per[w, "no database"] for w in ("read", "write")]
            line += f"{cells[0]:>+10.2f}  {cells[1]:>+9.2f}"
            if name != "pytest-postgresql" and min(cells) > 0:
                ratios = [upstream[w] / c for w, c in zip(("read", "write"), cells, strict=True)]
                line += f"   {ratios[0]:.1f}x / {ratios[1]:.1f}x faster"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
