"""Run pytest-postgresql's own user-facing test files against pytest-pgsandbox.

    python bench/upstream_postgresql.py --source PATH [--ref HEAD] [--keep]

``PATH`` is a checkout of pytest-postgresql, or a bare clone of it. Its ``tests/`` folder is
exported to a temporary folder outside this repository (nothing of it is committed here), and
in its files only the import lines change:

- ``pytest_postgresql`` ``factories`` (and ``factories.client``/``process``) and
  ``janitor.DatabaseJanitor`` become ``pytest_pgsandbox.postgresql``'s;
- the executor classes named only in type annotations (``PostgreSQLExecutor``,
  ``NoopExecutor``) become ``pytest_pgsandbox.postgresql.PostgreSQLProc``.

Every other import (``retry``, ``loader``, ``config``, ``_asyncio_compat``, ``plugin``, ...)
is pytest-postgresql's internals and stays: with pytest-postgresql installed (the ``bench``
extra) those files import, and the tests that check its internals say so. The files run in one
pytest session with the pytest_postgresql setting on (``PGSANDBOX_PYTEST_POSTGRESQL``, so the
sessions the tests start see it too) (the default ``postgresql`` /
``postgresql_proc`` fixtures are pytest-pgsandbox's) on the embedded PostgreSQL, as root or
not, and the outcome of each test is printed, then the totals.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

FILES = [
    "tests/test_postgresql.py",
    "tests/test_template_database.py",
    "tests/test_chaining.py",
    "tests/test_loader.py",
    "tests/test_plugin_asyncio.py",
    "tests/test_postgres_options_plugin.py",
    "tests/test_factory_errors.py",
]

REWRITES = [
    (
        r"^from pytest_postgresql import factories$",
        "from pytest_pgsandbox.postgresql import factories",
    ),
    (
        r"^from pytest_postgresql\.factories(?:\.client|\.process|\.noprocess)? import "
        r"(?!xdistify_dbname)(.+)$",
        r"from pytest_pgsandbox.postgresql.factories import \1",
    ),
    (
        r"^from pytest_postgresql\.janitor import DatabaseJanitor$",
        "from pytest_pgsandbox.postgresql.janitor import DatabaseJanitor",
    ),
    (
        r"^from pytest_postgresql\.executor import PostgreSQLExecutor$",
        "from pytest_pgsandbox.postgresql import PostgreSQLProc as PostgreSQLExecutor",
    ),
    (
        r"^from pytest_postgresql\.executor_noop import NoopExecutor$",
        "from pytest_pgsandbox.postgresql import PostgreSQLProc as NoopExecutor",
    ),
]


def export(source: Path, ref: str, into: Path) -> None:
    """``tests/`` of ``ref`` in the checkout or bare clone ``source``, into ``into``."""
    git_dir = source / ".git" if (source / ".git").exists() else source
    archive = subprocess.run(
        ["git", f"--git-dir={git_dir}", "archive", ref, "tests"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def rewrite(folder: Path) -> list[str]:
    """Change the import lines; returns each change as ``file: old -> new``."""
    changes = []
    for path in sorted(folder.rglob("*.py")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            for pattern, repl in REWRITES:
                new = re.sub(pattern, repl, line)
                if new != line:
                    changes.append(f"{path.relative_to(folder)}: {line} -> {new}")
                    lines[i] = line = new
        path.write_text("\n".join(lines) + "\n")
    return changes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="pytest-postgresql checkout")
    parser.add_argument("--ref", default="HEAD", help="the commit or tag to take tests from")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pgsb-upstream-ppg-"))
    try:
        export(args.source, args.ref, work)
        for change in rewrite(work):
            print(f"import changed: {change}")
        (work / "pytest.ini").write_text(
            "[pytest]\npytester_example_dir = tests/examples\nnorecursedirs = examples\n"
            "asyncio_default_fixture_loop_scope = function\n"
            "markers =\n    xdist_group: pytest-xdist's marker\n"
        )
        junit = work / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "pytester",
            f"--junitxml={junit}",
            "-q",
            "-rA",
            *FILES,
            *args.pytest_args,
        ]
        # Through the environment, so that the sessions the tests start (pytester) see them too.
        env = {**os.environ, "PGSANDBOX_PYTEST_POSTGRESQL": "true"}
        if importlib.util.find_spec("pytest_alembic") is not None:
            # pytest-alembic's collector fails on the test classes of these files (pytest 9:
            # "'TestCollector' object has no attribute '_nodeid'"); nothing here needs it.
            env["PYTEST_ADDOPTS"] = f"{env.get('PYTEST_ADDOPTS', '')} -p no:pytest_alembic"
        env.setdefault("PGSANDBOX_BIN_DIR", "embedded")
        run = subprocess.run(command, cwd=work, capture_output=True, text=True, env=env)
        ran = junit.exists() and int(ET.parse(junit).getroot()[0].get("tests", "0")) > 0  # noqa: S314
        if not ran:  # the session stopped first (or collected nothing): say why
            print(run.stdout[-4000:], run.stderr[-4000:])
            return 1
        return report(junit, run.stdout)
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(junit: Path, output: str) -> int:
    counts: Counter[str] = Counter()
    print(f"\n{'outcome':<9} test")
    for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314 - our own JUnit file
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        why = ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                why = (
                    (found.get("message") or "").splitlines()[0][:150]
                    if found.get("message")
                    else ""
                )
        counts[outcome] += 1
        print(f"{outcome:<9} {name}" + (f"\n          {why}" if why else ""))
    total = sum(counts.values())
    print("\n" + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f" of {total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
