"""``DatabaseJanitor`` (pytest-postgresql's test_janitor.py and the janitor parts of its
options tests): it creates, loads and drops databases it labels, and only those."""

from __future__ import annotations

import pytest

from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import UnsafeOperation
from pytest_pgsandbox.postgresql import DatabaseJanitor


def _janitor(server: LocalCluster, dbname: str, **kwargs: object) -> DatabaseJanitor:
    info = server.admin
    return DatabaseJanitor(
        user=info.user,
        host=info.host,
        port=info.port,
        password=info.password,
        version="15",
        dbname=dbname,
        connection_timeout=5,
        **kwargs,  # type: ignore[arg-type]
    )


def _exists(server: LocalCluster, name: str) -> bool:
    with connect(server.admin) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            is not None
        )


def test_as_a_context_manager(existing: LocalCluster) -> None:
    with _janitor(existing, "janitor_ctx") as janitor:
        assert _exists(existing, "janitor_ctx")
        with janitor.cursor("janitor_ctx") as cur:
            cur.execute("CREATE TABLE t (id int)")
    assert not _exists(existing, "janitor_ctx")


def test_init_load_and_drop_with_a_template(existing: LocalCluster, tmp_path: object) -> None:
    template = _janitor(existing, "janitor_tmpl", as_template=True)
    template.init()
    template.load(
        lambda **kw: connect_and_run(
            kw, "CREATE TABLE stories (name text); INSERT INTO stories VALUES ('a'), ('b')"
        )
    )
    copy = _janitor(existing, "janitor_copy", template_dbname="janitor_tmpl")
    copy.init()
    with copy.cursor("janitor_copy") as cur:
        cur.execute("SELECT count(*) FROM stories")
        assert cur.fetchone() == (2,)
    with connect(existing.admin) as conn:
        row = conn.execute(
            "SELECT datistemplate FROM pg_database WHERE datname = 'janitor_tmpl'"
        ).fetchone()
    assert row == (True,)
    copy.drop()
    template.drop()
    assert not _exists(existing, "janitor_copy")
    assert not _exists(existing, "janitor_tmpl")
    with pytest.raises(TimeoutError) as excinfo, copy.cursor("janitor_copy"):
        pass
    assert 'database "janitor_copy" does not exist' in str(excinfo.value.__cause__)


def connect_and_run(kwargs: dict[str, object], query: str) -> None:
    import psycopg

    with psycopg.connect(**kwargs) as conn:  # type: ignore[arg-type]
        conn.execute(query.encode())


def test_drop_leaves_a_database_it_did_not_make(existing: LocalCluster) -> None:
    with connect(existing.admin) as conn:
        conn.execute("DROP DATABASE IF EXISTS precious")
        conn.execute("CREATE DATABASE precious")
    try:
        with pytest.raises(UnsafeOperation, match="refuses to drop database 'precious'"):
            _janitor(existing, "precious").drop()
        assert _exists(existing, "precious")
    finally:
        with connect(existing.admin) as conn:
            conn.execute("DROP DATABASE precious")


def test_drop_of_a_missing_database_does_nothing(existing: LocalCluster) -> None:
    _janitor(existing, "never_made").drop()
    assert not _exists(existing, "never_made")


def test_in_a_session_on_the_proc_fixture(pytester: pytest.Pytester, runtime: object) -> None:
    pytester.makepyfile(
        """
        import psycopg
        from pytest_pgsandbox.postgresql import DatabaseJanitor, factories

        postgresql_proc = factories.postgresql_proc()

        def test_manual_janitor(postgresql_proc):
            kw = dict(user=postgresql_proc.user, host=postgresql_proc.host,
                      port=postgresql_proc.port, password=postgresql_proc.password)
            with DatabaseJanitor(**kw, dbname="my_custom_db", version=postgresql_proc.version):
                with psycopg.connect(dbname="my_custom_db", **kw) as conn:
                    conn.execute("CREATE TABLE t (id int)")
            with psycopg.connect(dbname="postgres", **kw) as conn:
                row = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = 'my_custom_db'").fetchone()
            assert row is None
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
