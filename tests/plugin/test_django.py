"""pytest-django's test databases on pgsandbox's server, from templates migrated once.

Real pytest sessions (pytester) of small Django projects: examples/django_app serial and under
xdist, fixture precedence (ours, pytest-django's, a conftest.py override), several aliases,
one migration run for four xdist workers, branch switches with ``--reuse-db``, a failing
migration, and transactional tests put back by reset instead of Django's flush.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from pgsb_helpers import leftovers
from pgsb_helpers import pgsandbox

pytest.importorskip("pytest_django")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_app"


def test_the_django_example_serial_then_under_xdist(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True)
    serial = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    serial.assert_outcomes(passed=12)
    serial.stdout.fnmatch_lines(
        [
            "pgsandbox: django: each PostgreSQL alias*",
            "pgsandbox: django: PostgreSQL *, local server *, ready in * s*",
            "pgsandbox: django alias default: template * (*), ready in *",
            "pgsandbox: django alias audit: template * (*), ready in *",
            # tests/test_live.py has transactional tests marked for reset
            "pgsandbox: django alias default: *put back by reset (starting point as copied*",
            "pgsandbox: django alias audit: *put back by reset (starting point as copied*",
        ]
    )
    xdist = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    xdist.assert_outcomes(passed=12)
    xdist.stdout.fnmatch_lines(["pgsandbox: django alias default: *put back by reset (*) ?gw?]"])
    assert leftovers(runtime) == []


SETTINGS = """
import os

SECRET_KEY = "x"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "things"]
DATABASES = {
    alias: {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "HOST": "nowhere.invalid",
        "USER": "app",
    }
    for alias, name in (("default", "app"), ("other", "app_other"))
}
"""

MODELS = """
from django.db import models


class Thing(models.Model):
    name = models.CharField(max_length=20)
    %EXTRA%
"""

MIGRATION = """
import os

from django.db import migrations, models


def note(apps, schema_editor):
    with open(os.environ["MIGRATED_LOG"], "a") as f:
        f.write(f"{os.getpid()} {schema_editor.connection.alias}\\n")
    apps.get_model("things", "Thing").objects.using(schema_editor.connection.alias).create(
        name="seed"
    )


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Thing",
            fields=[
                ("id", models.AutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=20)),
                %EXTRA%
            ],
        ),
        migrations.RunPython(note),
    ]
"""

TESTS = """
import pytest
from django.db import connections

from things.models import Thing


@pytest.mark.django_db(databases=["default", "other"])
@pytest.mark.parametrize("n", range(8))
def test_each_alias_has_its_rows(n, worker_id):
    for alias in ("default", "other"):
        assert Thing.objects.using(alias).get().name == "seed"
        Thing.objects.using(alias).create(name=f"t{n}")
        name = connections[alias].settings_dict["NAME"]
        base = "test_app" if alias == "default" else "test_app_other"
        assert name == (base if worker_id == "master" else f"{base}_{worker_id}")
        assert connections[alias].settings_dict["HOST"] != "nowhere.invalid"
"""


def _project(pytester: pytest.Pytester, extra_field: str = "") -> None:
    pytester.makeini(
        "[pytest]\nDJANGO_SETTINGS_MODULE = app_settings\npythonpath = .\npg_django = true\n"
        # The data migration reads it: an input of the templates (and of the cluster cache).
        "pg_template_inputs = env:MIGRATED_LOG\n"
    )
    pytester.makepyfile(app_settings=SETTINGS)
    things = pytester.path / "things"
    things.mkdir(exist_ok=True)
    (things / "__init__.py").write_text("")
    (things / "models.py").write_text(MODELS.replace("%EXTRA%", extra_field and FEATURE_MODEL))
    migrations = things / "migrations"
    migrations.mkdir(exist_ok=True)
    (migrations / "__init__.py").write_text("")
    (migrations / "0001_initial.py").write_text(MIGRATION.replace("%EXTRA%", extra_field))


def _migrations(log: Path) -> list[str]:
    return log.read_text().split("\n")[:-1] if log.exists() else []


def test_two_aliases_migrated_once_for_four_workers(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = pytester.path / "migrated.log"
    monkeypatch.setenv("MIGRATED_LOG", str(log))
    _project(pytester)
    pytester.makepyfile(test_things=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "4")
    result.assert_outcomes(passed=8)
    ran = _migrations(log)
    # One migration per alias for the whole run (by whichever worker came first); every
    # other worker waited for it and copied the template.
    assert sorted(line.split()[1] for line in ran) == ["default", "other"], ran
    assert leftovers(runtime) == []


BRANCH_TEST = """
import pytest
from things.models import Thing


@pytest.mark.django_db
def test_insert():
    Thing.objects.create(name="x")
    assert Thing.objects.count() == 2
"""

FEATURE = '("flag", models.BooleanField(default=False)),'
FEATURE_MODEL = "flag = models.BooleanField(default=False)"


def test_branch_switches_reuse_db_and_a_failing_migration(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = pytester.path / "migrated.log"
    monkeypatch.setenv("MIGRATED_LOG", str(log))
    _project(pytester)
    pytester.makepyfile(test_branch=BRANCH_TEST)
    args = ("-p", "no:cacheprovider", "--pg-reuse", "--reuse-db")

    def run(*expected: str) -> None:
        result = pytester.runpytest_subprocess(*args)
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines([f"pgsandbox: django{line}" for line in expected])

    try:
        # A new server: its cluster cache is prepared with both templates in it.
        run(
            ": *, ready in * s, its cluster cache was prepared (templates migrated, *)",
            " alias default: template reused (*), *; --reuse-db: test_app made from it",
        )
        run(" alias default: template reused (*), ready in *; --reuse-db: test_app kept")
        assert len(_migrations(log)) == 2  # both aliases, once
        # A feature branch adds a NOT NULL column: its own template, the kept copy made again.
        _project(pytester, FEATURE)
        run(" alias default: template migrated in *; --reuse-db: test_app was a copy of another *")
        assert len(_migrations(log)) == 4
        # Back to main: main's template again (no migration), never the feature's columns.
        _project(pytester)
        run(" alias default: template reused (*), *; --reuse-db: test_app was a copy of another *")
        assert len(_migrations(log)) == 4
        # A migration that fails stops the session once, naming app, migration and error.
        broken = pytester.path / "things" / "migrations" / "0002_broken.py"
        broken.write_text(
            "from django.db import migrations\n\n\n"
            "class Migration(migrations.Migration):\n"
            '    dependencies = [("things", "0001_initial")]\n'
            '    operations = [migrations.RunSQL("SELECT * FROM nope")]\n'
        )
        failed = pytester.runpytest_subprocess(*args)
        assert failed.ret == 1
        text = failed.stdout.str() + failed.stderr.str()
        failed.stdout.fnmatch_lines(
            [
                "*Django's migrations for database alias 'default' failed in migration "
                '0002_broken of app things: UndefinedTable: relation "nope" does not exist*'
            ]
        )
        assert text.count("0002_broken of app things") == 1, text
        assert "passed" not in text
    finally:
        pgsandbox(pytester, "stop")
    assert leftovers(runtime) == []


TWO_SERVERS = """
SECRET_KEY = "x"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "things"]
DATABASES = {
    alias: {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "app",
        "HOST": host,
        "USER": "app",
        "TEST": {"MIRROR": "default"} if alias == "replica" else {},
    }
    for alias, host in (
        ("default", "one.invalid"),
        ("other", "two.invalid"),  # the same NAME on another server: another database
        ("same", "one.invalid"),  # the same NAME on the same server: the same database
        ("replica", "three.invalid"),  # a test mirror of default
    )
}
"""

TWO_SERVERS_TEST = """
import pytest
from django.db import connections

from things.models import Thing


@pytest.mark.django_db(transaction=True, databases=["default", "other", "same", "replica"])
def test_each_server_its_own_database():
    Thing.objects.using("default").create(name="on one")
    Thing.objects.using("other").create(name="on two")

    def seen(alias):
        return sorted(Thing.objects.using(alias).values_list("name", flat=True))

    assert seen("default") == ["on one", "seed"]
    assert seen("other") == ["on two", "seed"]
    assert seen("same") == ["on one", "seed"]
    assert seen("replica") == ["on one", "seed"]
    names = {a: connections[a].settings_dict["NAME"] for a in ("default", "other", "same")}
    assert names == {"default": "test_app", "other": "test_app_other", "same": "test_app"}
"""


def test_the_same_name_on_two_servers_is_two_test_databases(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATED_LOG", str(pytester.path / "migrated.log"))
    _project(pytester)
    pytester.makepyfile(app_settings=TWO_SERVERS, test_servers=TWO_SERVERS_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "pgsandbox: django alias other: test database test_app_other (its NAME is "
            "another alias's, on another server)"
        ]
    )
    assert "alias same: test database" not in result.stdout.str()
    assert leftovers(runtime) == []


WHO = """
def test_who(request):
    defs = request._fixturemanager.getfixturedefs(
        "django_db_modify_db_settings", request.node
    )
    print("PROVIDER", defs[-1].func.__module__)
"""

OVERRIDE = """
import pytest


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    pass
"""


def test_fixture_precedence(pytester: pytest.Pytester, runtime: Path) -> None:
    _project(pytester)
    pytester.makepyfile(test_who=WHO)
    ours = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    ours.assert_outcomes(passed=1)
    ours.stdout.fnmatch_lines(["*PROVIDER pytest_pgsandbox._plugin.django"])
    stock = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", "--pg-no-django")
    stock.assert_outcomes(passed=1)
    stock.stdout.fnmatch_lines(["*PROVIDER pytest_django.fixtures"])
    assert "django=true" not in stock.stdout.str()
    pytester.makeconftest(OVERRIDE)
    mine = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    mine.assert_outcomes(passed=1)
    mine.stdout.fnmatch_lines(["*PROVIDER conftest"])
    line = "*django_db_modify_db_settings is overridden (in conftest)*inactive*"
    mine.stdout.fnmatch_lines([line])
    assert mine.stdout.str().count("is overridden") == 1
    info = pytester.runpytest_subprocess("--pg-info")
    info.stdout.fnmatch_lines(
        [
            "each Django alias's template hash covers*",
            "  django alias default: 3 apps (3 with migrations), * files, * MB, read in * ms",
            "    settings: AUTH_USER_MODEL, *",
            "  django alias other: *",
        ]
    )
    assert leftovers(runtime) == []


def test_without_the_setting_nothing_of_it_is_loaded(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            """
            import sys

            def test_nothing(pytestconfig):
                assert not pytestconfig.pluginmanager.has_plugin("pgsandbox-django")
                assert "pytest_pgsandbox._plugin.django" not in sys.modules
                assert "pytest_pgsandbox._engine.templates.django_source" not in sys.modules
            """
        )
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


RESET_CONFTEST = """
import pytest


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    # pytest-django's "initial test data" recipe: part of every test's starting point.
    from things.models import Thing

    with django_db_blocker.unblock():
        for alias in ("default", "other"):
            Thing.objects.using(alias).create(name="from setup")
"""

RESET_TESTS = """
import pytest
from django.db import connection
from django.test import TransactionTestCase

from things.models import Thing

ALIASES = ["default", "other"]
START = ["from setup", "seed"]
seen = {}


def _at_the_start():
    for alias in ALIASES:
        assert sorted(Thing.objects.using(alias).values_list("name", flat=True)) == START
        made = Thing.objects.using(alias).create(name="new")
        assert seen.setdefault(alias, made.id) == made.id  # sequences went back too
    with connection.cursor() as cur:
        cur.execute("SELECT to_regclass('made_by_a_test') IS NULL")
        assert cur.fetchone()[0]


@pytest.mark.django_db(transaction=True, databases=ALIASES)
def test_a_writes_and_runs_ddl():
    _at_the_start()
    Thing.objects.using("other").filter(name="seed").update(name="changed")
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE made_by_a_test (id int)")


@pytest.mark.django_db(transaction=True, databases=ALIASES)
def test_b_after_ddl_the_database_was_swapped():
    _at_the_start()
    Thing.objects.using("default").all().delete()


@pytest.mark.pg(isolation="transaction")
@pytest.mark.django_db(transaction=True, databases=ALIASES)
def test_c_keeps_djangos_flush():
    _at_the_start()


@pytest.mark.django_db(transaction=True, reset_sequences=True, databases=ALIASES)
def test_d_after_a_flush_the_start_is_back():
    _at_the_start()


@pytest.mark.django_db(databases=ALIASES)
def test_e_a_plain_db_test_after_reset():
    assert sorted(Thing.objects.values_list("name", flat=True)) == START


class TestFAsDjangosOwnTransactionTestCase(TransactionTestCase):
    databases = set(ALIASES)

    def test_f_first(self):
        _at_the_start()

    def test_g_second(self):
        _at_the_start()
"""


def test_reset_instead_of_flush_for_transactional_tests(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATED_LOG", str(pytester.path / "migrated.log"))
    _project(pytester)
    pytester.makeconftest(RESET_CONFTEST)
    pytester.makepyfile(test_reset=RESET_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pg-django-reset")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(
        [
            "pgsandbox: django alias default: template *, ready in *; its copy for reset made *",
            "pgsandbox: django alias default: transactional tests asking for it are put back "
            "by reset (starting point taken again after django_db_setup wrote*",
            "pgsandbox: django alias other: transactional tests *taken again*",
        ]
    )
    assert "is overridden" not in result.stdout.str()
    assert leftovers(runtime) == []
