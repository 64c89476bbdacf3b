"""server=docker: a container from any image, or a clear error where no daemon runs."""

from __future__ import annotations

import pytest

from pgsb_helpers import clean_env
from pytest_pgsandbox._engine.servers.docker import daemon_problem

NO_DAEMON = daemon_problem()
needs_daemon = pytest.mark.skipif(
    NO_DAEMON is not None, reason=f"needs a Docker daemon: {NO_DAEMON}"
)


def test_without_a_daemon_the_error_says_what_to_do(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_env(monkeypatch)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/no-docker.sock")
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "--pg-server=docker", "--pg-image=postgis/postgis:16-3.4"
    )
    assert result.ret == 1  # the session stops before any test
    result.assert_outcomes()
    result.stdout.fnmatch_lines(
        [
            "postgresql: Docker image postgis/postgis:16-3.4",
            "*server=docker (image postgis/postgis:16-3.4): no Docker daemon answered: its socket "
            "unix://*/no-docker.sock (DOCKER_HOST) does not exist*",
            "*Start Docker (or point DOCKER_HOST at a daemon*--pg-server=local*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


CONTAINER_TESTS = """
import psycopg
import pytest


def test_runs_on_the_image_asked_for(pg, pg_server):
    assert pg.fetchval("SHOW server_version").startswith("16.")
    assert pg_server.network_host and pg_server.network_port == 5432
    assert pg_server.admin.host == "127.0.0.1"


@pytest.mark.pg(isolation="clone")
def test_clone_isolation_works_there(pg):
    pg.execute("CREATE TABLE t (id int)")
    pg.conn.commit()
    with psycopg.connect(pg.url) as other:
        assert other.execute("SELECT count(*) FROM t").fetchone() == (0,)
"""


@needs_daemon
def test_a_container_from_the_image_serves_the_tests_and_goes_away(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    import docker

    clean_env(monkeypatch)
    client = docker.from_env()
    before = {c.id for c in client.containers.list(all=True)}
    pytester.makepyfile(CONTAINER_TESTS)
    result = pytester.runpytest_subprocess(
        "--pg-server=docker", "--pg-image=postgres:16-alpine", "--pg-start-timeout=300"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["postgresql: PostgreSQL 16.* in Docker (postgres:16-alpine*"])
    left = {c.id for c in client.containers.list(all=True)} - before
    assert not [c for c in left if "ryuk" not in client.containers.get(c).image.tags[0]]
