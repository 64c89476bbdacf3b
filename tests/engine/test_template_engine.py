"""Template building and clean-up on a real server, below the plugin."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from filelock import FileLock

from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers.cache import KEEP_TEMPLATES
from pytest_pgsandbox._engine.servers.cache import MARKS
from pytest_pgsandbox._engine.servers.cache import RECENT_SECONDS
from pytest_pgsandbox._engine.servers.cache import InitdbCache
from pytest_pgsandbox._engine.servers.cache import TemplateClusterCache
from pytest_pgsandbox._engine.servers.cache import marks
from pytest_pgsandbox._engine.servers.cache import project_mark
from pytest_pgsandbox._engine.servers.cache import prune
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


def test_template_cluster_cache_keeps_the_newest_entries_per_project(
    settings: Settings, tmp_path: Path
) -> None:
    cluster = local_cluster(
        settings.with_values(bin_dir=Path("embedded"), cache_dir=tmp_path / "cache")
    )
    base = cluster.data_source
    assert isinstance(base, InitdbCache)

    def cache(project: str, n: int) -> TemplateClusterCache:
        spec = spec_with(tmp_path, n)
        return TemplateClusterCache(
            base,
            fingerprint(spec, 18),
            lambda admin: ensure_template(admin, spec, 18, "run"),
            project=project,
        )

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    shared = cache(a, 0)
    data, _password, built = shared.get()
    assert built
    assert (data / "PG_VERSION").exists()
    assert cache(b, 0).get()[2] is False  # the same inputs: the same entry, shared
    assert set(marks(shared.entry)) == {project_mark(a), project_mark(b)}
    made = [cache(b, n) for n in range(1, 5)]
    for entry in made:
        assert entry.get()[2]
    # b's fourth and fifth templates took its two oldest out: the one it shared with a stays
    # (a still uses it), only without b's mark; the other, b's alone, is gone.
    assert set(marks(shared.entry)) == {project_mark(a)}
    assert [c.entry.exists() for c in made] == [False, True, True, True]
    assert all(set(marks(c.entry)) == {project_mark(b)} for c in made[1:])
    assert cache(a, 0).get()[2] is False
    marked = shared.entry / MARKS / project_mark(a)
    assert stat.S_IMODE(marked.stat().st_mode) == 0o600
    assert stat.S_IMODE(marked.parent.stat().st_mode) == 0o700
    assert a not in " ".join(p.name for p in shared.entry.rglob("*"))


def fake_entry(root: Path, name: str, used: float, **projects: float) -> Path:
    """A template cache entry as far as prune looks: its folder, its marks and their times."""
    entry = root / "templates" / name
    (entry / "data").mkdir(parents=True)
    for project, when in projects.items():
        (entry / MARKS).mkdir(exist_ok=True)
        (entry / MARKS / project_mark(project)).touch()
        os.utime(entry / MARKS / project_mark(project), (when, when))
    os.utime(entry, (used, used))
    return entry


def test_prune_keeps_every_recent_projects_newest_templates_longest(tmp_path: Path) -> None:
    now = time.time()
    # One busy project fills the cache beyond its limit with entries of its own newest three
    # and older ones it no longer marks as its newest (marked, but beyond KEEP).
    for n in range(KEEP_TEMPLATES):
        fake_entry(tmp_path, f"pg18-v3-busy{n:02d}", now - n, busy=now - n)
    quiet = fake_entry(tmp_path, "pg18-v3-quiet0", now - 9000, quiet=now - 9000)
    gone = now - 2 * RECENT_SECONDS
    stale = fake_entry(tmp_path, "pg18-v3-stale", now - 100, stale=gone)
    unowned = fake_entry(tmp_path, "pg18-v3-unowned", now)  # made by an older version
    building = fake_entry(tmp_path, "pg18-v3-building", now - 99999)
    with FileLock(str(building) + ".lock", timeout=0):
        removed = prune(tmp_path)
    assert building.exists()  # never while another process builds it
    left = {p.name for p in (tmp_path / "templates").iterdir() if p.is_dir()}
    assert len(left) == KEEP_TEMPLATES + 1
    # Unowned first, then the least recently used of those that are neither among a
    # project's newest three nor a recently active project's; the quiet project's only
    # template, used longest ago of the rest, stays, as do the busy project's newest three.
    assert removed == [
        "templates/pg18-v3-unowned",
        "templates/pg18-v3-stale",
        "templates/pg18-v3-busy23",
    ]
    assert not unowned.exists()
    assert not stale.exists()
    assert quiet.exists()
    assert {f"pg18-v3-busy{n:02d}" for n in range(3)} <= left


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
