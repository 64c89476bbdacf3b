"""Template building and clean-up on a real server, below the plugin."""

from __future__ import annotations

from pathlib import Path

from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers.cache import TemplateClusterCache
from pytest_pgsandbox._engine.servers.choice import local_cluster
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.templates.template import KEEP_OLD
from pytest_pgsandbox._engine.templates.template import Source
from pytest_pgsandbox._engine.templates.template import TemplateSpec
from pytest_pgsandbox._engine.templates.template import ensure_template
from pytest_pgsandbox._engine.templates.template import fingerprint
from pytest_pgsandbox._engine.templates.template import templates
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.settings import Settings


def spec_with(tmp_path: Path, n: int) -> TemplateSpec:
    (tmp_path / f"v{n}.sql").write_text(f"CREATE TABLE t{n} (id int);\n")
    return TemplateSpec(schema=(Source("sql", f"v{n}.sql"),), base=tmp_path)


def test_fingerprint_follows_every_input(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, 1)
    first = fingerprint(spec, 18)
    assert fingerprint(spec, 18) == first
    assert fingerprint(spec, 17) != first
    assert (
        fingerprint(TemplateSpec(spec.schema, extensions=("hstore",), base=tmp_path), 18) != first
    )
    (tmp_path / "v1.sql").write_text("CREATE TABLE t1 (id bigint);\n")
    assert fingerprint(spec, 18) != first


def test_found_again_and_old_ones_reaped(existing: LocalCluster, tmp_path: Path) -> None:
    built = [ensure_template(existing.admin, spec_with(tmp_path, n), 18, "run") for n in range(6)]
    assert not any(t.reused for t in built)
    again = ensure_template(existing.admin, spec_with(tmp_path, 5), 18, "run")
    assert again.reused
    assert again.name == built[-1].name
    with connect(existing.admin) as conn:
        names = {name for name, _ in templates(conn)}
        assert len(names) == KEEP_OLD + 1
        assert built[-1].name in names
        assert built[0].name not in names
        # Templates are dropped only through our label check, like everything else.
        provision.drop_database(conn, built[-1].name)
        assert not provision.exists(conn, built[-1].name)


def test_template_cluster_cache_keeps_the_newest_entries(
    settings: Settings, tmp_path: Path
) -> None:
    cluster = local_cluster(settings.with_values(bin_dir=Path("embedded")))
    base = cluster.data_source
    assert base is not None
    made = []
    for n in range(5):
        spec = spec_with(tmp_path, n)
        cache = TemplateClusterCache(
            base,  # type: ignore[arg-type]
            fingerprint(spec, 18),
            lambda admin, spec=spec: ensure_template(admin, spec, 18, "run"),  # type: ignore[misc]
        )
        data, _password, built = cache.get()
        assert built
        assert (data / "PG_VERSION").exists()
        made.append(cache.entry)
    left = [entry for entry in made if entry.exists()]
    assert left == made[-TemplateClusterCache.KEEP :]


def test_the_cache_forgets_the_least_recently_used_entries(tmp_path: Path) -> None:
    import os

    from pytest_pgsandbox._engine.servers.cache import KEEP_INITDB
    from pytest_pgsandbox._engine.servers.cache import prune

    folder = tmp_path / "initdb"
    for n in range(KEEP_INITDB + 3):
        entry = folder / f"pg18-{n}"
        (entry / "data").mkdir(parents=True)
        os.utime(entry, (1000 + n, 1000 + n))
    removed = prune(tmp_path)
    assert removed == [f"initdb/pg18-{n}" for n in (2, 1, 0)]
    assert sorted(p.name for p in folder.iterdir()) == [
        f"pg18-{n}" for n in range(3, KEEP_INITDB + 3)
    ]


_FREE_SPACE_MAPS = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'pg_catalog'::regnamespace AND NOT c.relisshared
  AND pg_relation_size(c.oid, 'fsm') > 0
"""


def test_a_template_is_built_with_compact_catalogs(existing: LocalCluster, tmp_path: Path) -> None:
    # A schema's DDL leaves dead catalog rows and free-space maps, which every copy would
    # carry: the template is rewritten without them.
    (tmp_path / "schema.sql").write_text(
        "".join(f"CREATE TABLE t{n} (id int PRIMARY KEY, name text);\n" for n in range(20))
        + "ALTER TABLE t0 ADD COLUMN note text;\nDROP TABLE t19;\n"
    )
    spec = TemplateSpec(schema=(Source("sql", "schema.sql"),), base=tmp_path)
    built = ensure_template(existing.admin, spec, 18, "run")
    with connect(existing.admin.for_db(built.name)) as conn:
        with_maps = {row[0] for row in conn.execute(_FREE_SPACE_MAPS)}
        # Rewriting itself adds (and deletes) rows of these two, last: they may get one back.
        assert with_maps <= {"pg_attribute", "pg_class"}
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (19,)
    with connect(existing.admin) as conn:
        provision.drop_database(conn, built.name)


def test_a_server_that_refuses_the_compaction_still_gets_its_template(
    existing: LocalCluster, tmp_path: Path
) -> None:
    # A statement_timeout too short for VACUUM FULL: the template is built all the same.
    (tmp_path / "schema.sql").write_text(
        "CREATE TABLE t (id int PRIMARY KEY);\n"
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET statement_timeout = 1', "
        "current_database()); END $$;\n"
    )
    spec = TemplateSpec(schema=(Source("sql", "schema.sql"),), base=tmp_path)
    built = ensure_template(existing.admin, spec, 18, "run")
    assert not built.reused
    with connect(existing.admin) as conn:
        assert built.name in {name for name, _ in templates(conn)}
        provision.drop_database(conn, built.name)
