"""Templates: built once from their sources, reused while the inputs stay the same."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from pgsb_helpers import leftovers
from pgsb_helpers import pgsandbox

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "users_app"

ORDER = """
import os
import random

def pytest_collection_modifyitems(items):
    order = os.environ.get("PGSB_ORDER")
    if order == "reversed":
        items.reverse()
    elif order and order.startswith("random-"):
        random.Random(int(order.split("-")[1])).shuffle(items)
"""


@pytest.fixture
def users_app(pytester: pytest.Pytester) -> Path:
    """The example project (SQLAlchemy model, Alembic history, 5 seeded users), copied."""
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True)
    (pytester.path / "conftest.py").write_text(ORDER)
    return pytester.path


def make_unique(users_app: Path) -> None:
    """Change an input, so that no cache from an earlier test holds this template."""
    migration = users_app / "migrations" / "versions" / "0001_create_users.py"
    migration.write_text(migration.read_text() + f"\n# {random.getrandbits(64):x}\n")


@pytest.mark.parametrize(
    ("order", "args"),
    [
        ("forward", ()),
        ("reversed", ()),
        ("random", ()),
        ("forward", ("-n", "2")),
    ],
)
def test_the_example_project_passes_in_any_order(
    pytester: pytest.Pytester,
    runtime: Path,
    users_app: Path,
    monkeypatch: pytest.MonkeyPatch,
    order: str,
    args: tuple[str, ...],
) -> None:
    if order == "random":
        order = f"random-{random.randrange(10**6)}"  # shown in the output if this fails
    monkeypatch.setenv("PGSB_ORDER", order)
    print("order:", order)
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=2)
    assert leftovers(runtime) == []


def test_a_reused_server_reuses_the_template_until_a_migration_changes(
    pytester: pytest.Pytester, runtime: Path, users_app: Path
) -> None:
    make_unique(users_app)
    # The migration checks too: they pass on the example, and what passed is kept by the
    # template's hash, on a reused server as on any other.
    args = ("--pg-reuse", "--pg-check-migrations", "-v")
    try:
        first = pytester.runpytest_subprocess(*args)
        first.assert_outcomes(passed=7)
        assert first.stdout.str().count("PASSED for ") == 5
        first.stdout.fnmatch_lines(["postgresql: template built: * in *"])
        line = next(ln for ln in first.outlines if ln.startswith("postgresql: template"))
        digest = line.split()[3]

        second = pytester.runpytest_subprocess(*args)
        second.assert_outcomes(passed=7)
        assert second.stdout.str().count(f"PASSED for {digest}, cached") == 5
        second.stdout.fnmatch_lines(
            [
                "*(reusable server *), ready in *",
                f"postgresql: template reused: {digest} (no migrations ran)",
            ]
        )

        migration = users_app / "migrations" / "versions" / "0001_create_users.py"
        migration.write_text(migration.read_text() + "\n# touched\n")
        third = pytester.runpytest_subprocess(*args)
        third.assert_outcomes(passed=7)
        third.stdout.fnmatch_lines(["postgresql: template built: * in *"])
        assert digest not in third.stdout.str()
        assert third.stdout.str().count("PASSED for ") == 5
        assert ", cached" not in third.stdout.str()
    finally:
        pgsandbox(pytester, "stop").stdout.fnmatch_lines(["stopped *"])
    assert leftovers(runtime) == []


COUNTING_SCHEMA = """
# {unique}
import os
from pathlib import Path

def build(conn):
    with open(os.environ["BUILD_LOG"], "a") as log:
        log.write(f"{os.getpid()}\\n")
    conn.execute("CREATE TABLE things (id int PRIMARY KEY)")
"""

MANY_TESTS = """
import os
import pytest

@pytest.mark.parametrize("n", range(8))
def test_things(pg, n):
    pg.execute("INSERT INTO things VALUES (%s)", (n,))
    pg.conn.commit()
    assert pg.fetchval("SELECT count(*) FROM things") == 1
    where = pg.fetchval("SELECT current_setting('data_directory')")
    with open(os.environ["SERVER_LOG"], "a") as log:
        log.write(f"{where} {pg.dbname}\\n")
"""


@pytest.mark.parametrize("workers", ["2", "4"])
def test_xdist_builds_the_template_once_for_all_workers(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    log = pytester.path / "builds.log"
    servers = pytester.path / "servers.log"
    monkeypatch.setenv("BUILD_LOG", str(log))
    monkeypatch.setenv("SERVER_LOG", str(servers))
    unique = COUNTING_SCHEMA.replace("{unique}", f"{random.getrandbits(64):x}")
    pytester.makepyfile(schema_mod=unique, test_many=MANY_TESTS)
    pytester.makeini("[pytest]\npythonpath = .\npg_schema = callable:schema_mod:build\n")
    result = pytester.runpytest_subprocess("-n", workers)
    result.assert_outcomes(passed=8)
    assert len(log.read_text().splitlines()) == 1, "the template was built more than once"
    seen = [line.split() for line in servers.read_text().splitlines()]
    assert len({data_dir for data_dir, _db in seen}) == 1, "the workers shared one server"
    assert len({db for _data_dir, db in seen}) == int(workers), "each worker its own database"
    assert leftovers(runtime) == []


def test_sql_folder_in_sorted_order_metadata_and_seed(
    pytester: pytest.Pytester, runtime: Path
) -> None:
    db = pytester.mkdir("db")
    (db / "02_orders.sql").write_text(
        "CREATE TABLE orders (id serial PRIMARY KEY,\n"
        "  customer_id int REFERENCES customers, note text DEFAULT '100%');\n"
    )
    (db / "01_customers.sql").write_text("CREATE TABLE customers (id int PRIMARY KEY);\n")
    pytester.makepyfile(
        models="""
        from sqlalchemy import Column, Integer, MetaData, Table
        metadata = MetaData()
        Table("audit", metadata, Column("id", Integer, primary_key=True))
        """,
        seed="""
        import psycopg

        def load(conn):
            conn.execute("INSERT INTO customers VALUES (1)")

        def load_by_url(url):
            with psycopg.connect(url) as other:
                other.execute("INSERT INTO customers VALUES (2)")
        """,
        test_schema="""
        def test_schema(pg):
            assert pg.fetchval("SELECT count(*) FROM customers") == 2
            assert pg.fetchval("SELECT to_regclass('orders')") == "orders"
            assert pg.fetchval("SELECT to_regclass('audit')") == "audit"
            assert pg.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'hstore'") == 1
        """,
    )
    pytester.makeini(
        "[pytest]\npythonpath = .\npg_schema =\n    sql:db\n    metadata:models:metadata\n"
        "pg_seed =\n    callable:seed:load\n    callable:seed:load_by_url\n"
        "pg_extensions = hstore\n"
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_pg_template_can_be_overridden(pytester: pytest.Pytester, runtime: Path) -> None:
    pytester.makepyfile(
        conftest="""
        import pytest

        @pytest.fixture(scope="session")
        def pg_template(pg_build_template):
            return pg_build_template(schema=["sql:schema.sql"])
        """,
        test_override="""
        def test_uses_it(pg, pg_template):
            assert pg_template.name.startswith("pgsandbox_tpl_")
            assert pg.fetchval("SELECT to_regclass('from_override')") == "from_override"
        """,
    )
    (pytester.path / "schema.sql").write_text("CREATE TABLE from_override (id int);\n")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("files", "ini", "expected"),
    [
        (
            {},
            "pg_schema = alembic:missing/alembic.ini",
            ["*alembic:missing/alembic.ini: no such file: *missing/alembic.ini*"],
        ),
        (
            {"db/schema.sql": "CREATE TABLE ok (id int);\n\nCREATE TABLE broken (id int,);\n"},
            "pg_schema = sql:db",
            ['*sql:db: *schema.sql line 3: syntax error at or near ")"*'],
        ),
        (
            {},
            "pg_schema = metadata:no_such_module:metadata",
            ["*metadata:no_such_module:metadata: cannot find module 'no_such_module'*"],
        ),
        (
            {"schema.sql": "CREATE TABLE t (id int);\n"},
            "pg_schema = sql:schema.sql\npg_extensions = no_such_extension",
            [
                "*extension 'no_such_extension' could not be created*",
                "*available on this server (*): *plpgsql*",
            ],
        ),
        (
            {"seedmod.py": "def load(conn):\n    raise ValueError('no customers file')\n"},
            "pg_seed = callable:seedmod:load",
            [
                "*callable:seedmod:load raised ValueError: no customers file*",
                "*at *seedmod.py:2 in load*",
            ],
        ),
    ],
    ids=["missing-alembic-ini", "sql-syntax-error", "metadata-import", "extension", "callable"],
)
def test_a_bad_input_stops_the_session_with_one_message(
    pytester: pytest.Pytester,
    runtime: Path,
    files: dict[str, str],
    ini: str,
    expected: list[str],
) -> None:
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    pytester.makeini(f"[pytest]\npythonpath = .\n{ini}\n")
    pytester.makepyfile(
        test_x="""
        import pytest

        @pytest.mark.parametrize("n", range(3))
        def test_x(pg, n):
            pass
        """
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*pgsandbox: the template could not be built.*", *expected])
    assert "ERROR at setup" not in result.stdout.str()
    assert leftovers(runtime) == []


def test_a_migration_that_raises_names_its_file(
    pytester: pytest.Pytester, runtime: Path, users_app: Path
) -> None:
    (users_app / "migrations" / "versions" / "0003_broken.py").write_text(
        '"""broken"""\n'
        "from alembic import op\n"
        'revision = "0003"\n'
        'down_revision = "0002"\n\n'
        "def upgrade():\n"
        '    op.execute("ALTER TABLE users ADD COLUMN age int NOT NULL DEFAULT")\n\n'
        "def downgrade():\n"
        "    pass\n"
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*pgsandbox: the template could not be built.*",
            "*alembic:alembic.ini: alembic upgrade heads failed: ProgrammingError: *syntax error*",
            "*in *0003_broken.py:7*",
        ]
    )


def test_throwaway_servers_start_with_the_template_already_built(
    pytester: pytest.Pytester, runtime: Path, users_app: Path
) -> None:
    make_unique(users_app)
    first = pytester.runpytest_subprocess()
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["postgresql: template built: * in *"])
    second = pytester.runpytest_subprocess()
    second.assert_outcomes(passed=2)
    second.stdout.fnmatch_lines(
        ["*local server (socket *)*", "postgresql: template reused: * (no migrations ran)"]
    )
    make_unique(users_app)
    third = pytester.runpytest_subprocess()
    third.stdout.fnmatch_lines(["postgresql: template built: * in *"])
    assert leftovers(runtime) == []


def test_the_cluster_cache_keeps_templates_per_project(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cache of its own: what other tests leave in the shared one does not count here.
    cache = runtime.parent / "cache"
    monkeypatch.setenv("PGSANDBOX_CACHE_DIR", str(cache))
    for project in ("a", "b"):
        folder = pytester.mkdir(project)
        (folder / "pytest.ini").write_text("[pytest]\npg_schema = sql:schema.sql\n")
        (folder / "test_it.py").write_text(
            "def test_it(pg):\n    assert pg.execute('SELECT count(*) FROM t').fetchone()\n"
        )

    def run(project: str, version: int) -> pytest.RunResult:
        schema = f"CREATE TABLE t (id int);\nCREATE TABLE {project}{version} (id int);\n"
        (pytester.path / project / "schema.sql").write_text(schema)
        result = pytester.runpytest_subprocess(project)
        result.assert_outcomes(passed=1)
        return result

    built = "*ready in * s, its cluster cache was prepared*"
    run("a", 1).stdout.fnmatch_lines([built, "postgresql: template built: * in *"])
    [entry] = [p for p in (cache / "templates").iterdir() if p.is_dir()]
    made = (entry / "meta.json").stat().st_mtime_ns
    for version in range(1, 5):  # another project's four templates (a branch switch or so)
        run("b", version).stdout.fnmatch_lines([built])
    # Project a's next run finds its template in the cache: no migrations, no staging server.
    again = run("a", 1)
    again.stdout.fnmatch_lines(["postgresql: template reused: * (no migrations ran)"])
    again.stdout.no_fnmatch_line(built)
    assert (entry / "meta.json").stat().st_mtime_ns == made  # the same entry, not rebuilt
    assert len([p for p in (cache / "templates").iterdir() if p.is_dir()]) == 1 + 3
    # b's fourth template took b's own oldest out of the cache: b builds that one again.
    run("b", 1).stdout.fnmatch_lines([built, "postgresql: template built: * in *"])
    assert leftovers(runtime) == []
