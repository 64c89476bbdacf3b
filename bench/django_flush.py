"""Django's flush against pytest-pgsandbox's reset, after each transactional test.

    python bench/django_flush.py [--models 150] [--tests 40] [--rounds 2] [--serialized-tests 6]

Makes a Django project whose one app has ``--models`` models (a foreign key to the model
before every third one), next to ``django.contrib.auth`` and ``contenttypes``, and a data
migration that writes 20 rows into each of ten of the tables. Each test writes a row into
two tables and reads one. The same tests run, one pytest session each, interleaved over
``--rounds``, under:

- ``db``: plain ``django_db`` (one transaction, rolled back): the floor;
- ``flush``: ``django_db(transaction=True)``: Django empties every table after each test
  (and emits ``post_migrate`` again), and the data migration's rows are gone after the first;
- ``flush+serialized``: the same with ``serialized_rollback=True``, which puts those rows
  back the way Django offers (``--serialized-tests`` of them: each reloads the whole snapshot);
- ``reset``: ``django_db(transaction=True)`` with ``--pg-django-reset``: only the tables the
  test wrote are put back, the data migration's rows included.

All sessions share one reusable local server (the template is migrated by the first). The
figure per test is the sum of its setup, call and teardown durations as pytest reports them,
the first test of each session left out (it creates the test database).
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
import textwrap
import time
from pathlib import Path

SETTINGS = """
SECRET_KEY = "bench"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "wide"]
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "wide"}}
"""

DATA_MIGRATION = """
from django.db import migrations


def add(apps, schema_editor):
    for i in range(10):
        model = apps.get_model("wide", f"Model{i:03d}")
        model.objects.bulk_create(model(name=f"seed {j}", amount=j) for j in range(20))


class Migration(migrations.Migration):
    dependencies = [("wide", "0001_initial")]
    operations = [migrations.RunPython(add, migrations.RunPython.noop)]
"""

CONFTEST = """
import json, os


def pytest_runtest_logreport(report):
    with open(os.environ["BENCH_OUT"], "a") as f:
        f.write(json.dumps([report.nodeid, report.when, report.duration]) + "\\n")
"""

TESTS = """
import pytest

from wide.models import Model000, Model005, Model100

MARK = pytest.mark.django_db(**{kwargs})


@MARK
@pytest.mark.parametrize("n", range({tests}))
def test_write(n):
    Model005.objects.create(name=f"t{{n}}", amount=n)
    Model100.objects.create(name=f"t{{n}}", amount=n)
    assert Model000.objects.count() >= 0
"""

VARIANTS = {
    "db": ("{}", []),
    "flush": ('{"transaction": True}', []),
    "flush+serialized": ('{"transaction": True, "serialized_rollback": True}', []),
    "reset": ('{"transaction": True}', ["--pg-django-reset"]),
}


def models_source(count: int) -> str:
    lines = ["from django.db import models", ""]
    for i in range(count):
        lines += [
            "",
            f"class Model{i:03d}(models.Model):",
            "    name = models.CharField(max_length=50)",
            "    amount = models.IntegerField(default=0)",
            "    note = models.TextField(blank=True, default='')",
        ]
        if i % 3 == 2:
            lines.append(
                f"    parent = models.ForeignKey('Model{i - 1:03d}', null=True, "
                "on_delete=models.SET_NULL)"
            )
    return "\n".join(lines) + "\n"


def make_project(root: Path, models: int) -> None:
    (root / "project").mkdir()
    (root / "project" / "__init__.py").write_text("")
    (root / "project" / "settings.py").write_text(SETTINGS)
    app = root / "wide"
    (app / "migrations").mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "migrations" / "__init__.py").write_text("")
    (app / "models.py").write_text(models_source(models))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "PYTHONPATH": str(root)}
    subprocess.run(
        [sys.executable, "-m", "django", "makemigrations", "wide", "-v", "0"],
        cwd=root,
        env=env,
        check=True,
    )
    (app / "migrations" / "0002_seed.py").write_text(DATA_MIGRATION)
    (root / "conftest.py").write_text(CONFTEST)
    (root / "pytest.ini").write_text(
        "[pytest]\nDJANGO_SETTINGS_MODULE = project.settings\npythonpath = .\n"
        "pg_django = true\npg_reuse = true\n"
    )


def run_variant(root: Path, name: str, tests: int, out: Path) -> list[float]:
    kwargs, args = VARIANTS[name]
    (root / "test_bench.py").write_text(textwrap.dedent(TESTS.format(kwargs=kwargs, tests=tests)))
    out.write_text("")
    env = {**os.environ, "BENCH_OUT": str(out)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_bench.py", *args]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{name}: pytest failed ({done.returncode}):\n{done.stdout[-3000:]}")
    for line in done.stdout.splitlines():
        if "copy for reset made" in line:  # the instrumented template, once per server
            print(line)
    per_test: dict[str, float] = {}
    for line in out.read_text().splitlines():
        nodeid, _when, duration = json.loads(line)
        per_test[nodeid] = per_test.get(nodeid, 0.0) + duration
    return [ms * 1000 for ms in list(per_test.values())[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=150)
    parser.add_argument("--tests", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--serialized-tests",
        type=int,
        default=6,
        help="tests of flush+serialized (each reloads the whole snapshot: far slower)",
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma list")
    options = parser.parse_args()
    variants = [v for v in options.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    root = Path(tempfile.mkdtemp(prefix="pgsb-django-flush-"))
    out = root / "durations.jsonl"
    try:
        make_project(root, max(options.models, 101))
        began = time.monotonic()
        run_variant(root, "db", 2, out)  # migrates the template once
        print(f"template migrated in {time.monotonic() - began:.1f} s (one session)")
        results: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(options.rounds):
            for name in variants:
                count = options.serialized_tests if name == "flush+serialized" else options.tests
                results[name] += run_variant(root, name, count, out)
        load = os.getloadavg()
        models = max(options.models, 101)
        print(
            f"\n{models} models (+ auth, contenttypes), {options.tests} tests "
            f"({options.serialized_tests} for flush+serialized) x {options.rounds} rounds, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        print(f"{'variant':<18} {'median ms/test':>15} {'mean':>8} {'p90':>8}")
        for name, values in results.items():
            p90 = statistics.quantiles(values, n=10)[-1]
            print(
                f"{name:<18} {statistics.median(values):>15.1f} "
                f"{statistics.fmean(values):>8.1f} {p90:>8.1f}"
            )
        if "flush" in results and "reset" in results:
            flush = statistics.median(results["flush"])
            reset = statistics.median(results["reset"])
            print(f"\nflush / reset (medians): {flush / reset:.1f}x")
        if os.environ.get("BENCH_RAW"):
            print(json.dumps({k: [round(v, 1) for v in vs] for k, vs in results.items()}))
    finally:
        subprocess.run(
            [sys.executable, "-m", "pytest_pgsandbox", "stop"],
            cwd=root,
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
