"""Every setting from each source (flag, environment, ini), and bad values.

``pytest --pg-info`` prints each resolved value with its source; behaviour of the settings
themselves is tested where it matters (here for a few, and in the other modules).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pgsb_helpers import clean_env
from pytest_pgsandbox.settings import SETTINGS

# name -> (raw value, how --pg-info shows it)
VALUES: dict[str, tuple[str, str]] = {
    "server": ("local", "local"),
    "url": ("postgresql://app:hunter2@db.internal:6543/app", "postgresql://app:***@db.internal"),
    "url_command": ("vault read -field=url secret/db", "vault read -field=url secret/db"),
    "image": ("postgis/postgis:16-3.4", "postgis/postgis:16-3.4"),
    "allow_hosts": ("postgres,db.ci", "postgres,db.ci"),
    "bin_dir": ("embedded", "embedded"),
    "tcp": ("true", "true"),
    "port": ("6111", "6111"),
    "conf": ("work_mem=9MB", "work_mem=9MB"),
    "work_mem": ("64", "64"),
    "schema": ("sql:db/schema.sql", "sql:db/schema.sql"),
    "seed": ("callable:app.seed:load", "callable:app.seed:load"),
    "extensions": ("pg_trgm,hstore", "pg_trgm,hstore"),
    "template_inputs": ("data/*.csv", "data/*.csv"),
    "scenarios_dir": ("/tmp/pgsb-scenarios-elsewhere", "/tmp/pgsb-scenarios-elsewhere"),
    "role": ("app", "app"),
    "role_per_worker": ("true", "true"),
    "reuse": ("true", "true"),
    "isolation": ("clone", "clone"),
    "driver": ("psycopg2", "psycopg2"),
    "clone_pool": ("3", "3"),
    "keep": ("failed", "failed"),
    "verify_isolation": ("true", "true"),
    "check_migrations": ("true", "true"),
    "migrations_timeout": ("90", "90"),
    "migrations_models": ("app.models:Base.metadata", "app.models:Base.metadata"),
    "tmpfs": ("false", "false"),
    "pytest_postgresql": ("true", "true"),
    "start_timeout": ("7", "7"),
    "url_env": ("DATABASE_URL", "DATABASE_URL"),
    "env": ("DATABASE_URL={sync_url}", "DATABASE_URL={sync_url}"),
    "attach": ("shared-dev", "shared-dev"),
    "django": ("true", "true"),
    "django_reset": ("true", "true"),
    "runtime_dir": ("/tmp/pgsb-elsewhere", "/tmp/pgsb-elsewhere"),
    "cache_dir": ("/tmp/pgsb-cache-elsewhere", "/tmp/pgsb-cache-elsewhere"),
}


def test_every_setting_has_a_case() -> None:
    assert set(VALUES) == {s.name for s in SETTINGS}


@pytest.mark.parametrize("source", ["flag", "env", "ini"])
@pytest.mark.parametrize("name", sorted(VALUES))
def test_each_setting_from_each_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str, source: str
) -> None:
    clean_env(monkeypatch)
    setting = next(s for s in SETTINGS if s.name == name)
    raw, shown = VALUES[name]
    args = ["--pg-info"]
    if source == "flag":
        # On/off settings are plain flags: --pg-tcp turns on, --pg-no-tmpfs turns off.
        if setting.is_flag:
            args.append(setting.flag if raw == "true" else setting.no_flag)
        else:
            args.append(f"{setting.flag}={raw}")
        where = f"the command line ({setting.flag})"
    elif source == "env":
        monkeypatch.setenv(setting.env, raw)
        where = f"environment variable {setting.env}"
    else:
        pytester.makeini(f"[pytest]\n{setting.ini} = {raw}\n")
        where = f"{setting.ini} in tox.ini"
    result = pytester.runpytest_inprocess(*args)
    assert result.ret == 0
    line = next(ln for ln in result.outlines if ln.strip().startswith(name + " "))
    assert shown in line
    assert where in line
    assert "hunter2" not in result.stdout.str()


def test_flag_beats_env_beats_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_env(monkeypatch)
    pytester.makeini("[pytest]\npg_port = 6001\npg_start_timeout = 9\npg_tmpfs = false\n")
    monkeypatch.setenv("PGSANDBOX_PORT", "6002")
    monkeypatch.setenv("PGSANDBOX_START_TIMEOUT", "8")
    result = pytester.runpytest_inprocess("--pg-info", "--pg-port=6003")
    out = result.stdout.str()
    assert "6003" in out
    assert "--pg-port" in out
    assert " 8 " in out
    assert "PGSANDBOX_START_TIMEOUT" in out
    assert "pg_tmpfs in tox.ini" in out


@pytest.mark.parametrize(
    ("args", "env", "ini", "expected"),
    [
        (
            ["--pg-server=docker-compose"],
            {},
            "",
            "'server' has the invalid value 'docker-compose'; it came from the command line "
            "(--pg-server). Accepted values: auto, local, url, docker.",
        ),
        (
            [],
            {"PGSANDBOX_TCP": "sometimes"},
            "",
            "'tcp' has the invalid value 'sometimes'; it came from environment variable "
            "PGSANDBOX_TCP. Accepted values: true or false.",
        ),
        (
            [],
            {},
            "pg_port = 99999",
            "'port' has the invalid value '99999'; it came from pg_port in tox.ini. "
            "Accepted values: a port number from 1 to 65535, or 0 for a free one.",
        ),
    ],
)
def test_bad_values_stop_pytest_with_a_usage_error(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    ini: str,
    expected: str,
) -> None:
    clean_env(monkeypatch)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_x(pg):\n    pass\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert expected in result.stderr.str()


def test_tcp_from_ini_gives_a_tcp_url(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\npg_tcp = true\npg_bin_dir = embedded\n")
    pytester.makepyfile(
        """
        import psycopg

        import pytest

        @pytest.mark.pg(isolation="reset")
        def test_tcp(pg):
            assert "@127.0.0.1:" in pg.url
            with psycopg.connect(pg.url) as other:
                assert other.execute("SELECT inet_server_addr()").fetchone()[0] is not None
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*local server (socket *, tcp 127.0.0.1:*)*"])


def test_conf_from_env_reaches_the_server(
    pytester: pytest.Pytester, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSANDBOX_CONF", "work_mem=9MB statement_timeout=5s")
    pytester.makepyfile(
        """
        def test_conf(pg):
            assert pg.fetchval("SHOW work_mem") == "9MB"
            assert pg.fetchval("SHOW statement_timeout") == "5s"
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "32MB"),
        (("--pg-work-mem=0",), "4MB"),
        (("--pg-work-mem=64",), "64MB"),
        (("--pg-conf-opt", "work_mem=8MB", "--pg-conf-opt=jit=off"), "8MB"),
    ],
)
def test_work_mem_and_conf_opt_as_in_pytest_pgsql(
    pytester: pytest.Pytester,
    runtime: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    expected: str,
) -> None:
    clean_env(monkeypatch)
    pytester.makepyfile(
        f"""
        def test_work_mem(pg):
            assert pg.fetchval("SHOW work_mem") == {expected!r}
        """
    )
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)


@pytest.mark.parametrize("tmpfs", ["true", "false"])
def test_tmpfs_decides_where_the_data_lives(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmpfs: str, shared_cache: Path
) -> None:
    clean_env(monkeypatch)
    monkeypatch.setenv("PGSANDBOX_CACHE_DIR", str(shared_cache))
    pytester.makepyfile(
        """
        def test_where(pg):
            print("DATA:", pg.fetchval("SHOW data_directory"))
        """
    )
    result = pytester.runpytest_subprocess(
        "--pg-tmpfs" if tmpfs == "true" else "--pg-no-tmpfs", "-s"
    )
    result.assert_outcomes(passed=1)
    data = next(ln for ln in result.outlines if "DATA:" in ln)
    on_ram = "/dev/shm/" in data
    if tmpfs == "false" or not Path("/dev/shm").is_dir():
        assert not on_ram
    else:
        assert on_ram
