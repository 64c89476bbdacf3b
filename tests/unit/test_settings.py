"""Resolving settings: precedence, sources, and errors that name everything (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_pgsandbox.errors import SettingError
from pytest_pgsandbox.settings import SETTINGS
from pytest_pgsandbox.settings import Settings
from pytest_pgsandbox.settings import resolve


def test_defaults_when_nothing_is_set() -> None:
    settings = resolve({}, {}, {})
    assert settings == Settings()
    assert settings.non_default() == []
    assert settings.source("tcp") == "default"


def test_names_mirror_each_other() -> None:
    for s in SETTINGS:
        assert s.flag == "--pg-" + s.name.replace("_", "-")
        assert s.ini == "pg_" + s.name
        assert s.env == "PGSANDBOX_" + s.name.upper()


@pytest.mark.parametrize(
    ("flags", "env", "ini", "value", "source"),
    [
        ({"port": "5001"}, {"PGSANDBOX_PORT": "5002"}, {"port": "5003"}, 5001, "--pg-port"),
        ({}, {"PGSANDBOX_PORT": "5002"}, {"port": "5003"}, 5002, "PGSANDBOX_PORT"),
        ({}, {}, {"port": "5003"}, 5003, "pg_port in pytest.ini"),
        ({"port": None}, {}, {"port": None}, 0, "default"),
    ],
)
def test_precedence_flag_env_ini_default(
    flags: dict[str, str], env: dict[str, str], ini: dict[str, str], value: int, source: str
) -> None:
    settings = resolve(flags, env, ini, "pytest.ini")
    assert settings.port == value
    assert source in settings.source("port")


def test_repeatable_conf_from_each_source() -> None:
    assert resolve({"conf": ["work_mem=8MB", "jit=off"]}, {}, {}).conf == (
        ("work_mem", "8MB"),
        ("jit", "off"),
    )
    env = {"PGSANDBOX_CONF": "work_mem=8MB 'application_name=a b'"}
    assert resolve({}, env, {}).conf == (("work_mem", "8MB"), ("application_name", "a b"))
    assert resolve({}, {}, {"conf": ["work_mem = 8MB"]}).conf == (("work_mem", "8MB"),)


def test_types() -> None:
    settings = resolve(
        {"tcp": "yes", "bin_dir": "~/pg/bin", "start_timeout": "2.5"},
        {"PGSANDBOX_URL_ENV": "DATABASE_URL"},
        {"server": "LOCAL"},
    )
    assert settings.tcp is True
    assert settings.bin_dir == Path("~/pg/bin").expanduser()
    assert settings.start_timeout == 2.5
    assert settings.url_env == "DATABASE_URL"
    assert settings.server == "local"


@pytest.mark.parametrize(
    ("name", "raw", "accepted"),
    [
        ("server", "docker-compose", "auto, local, url"),
        ("tcp", "maybe", "true or false"),
        ("port", "70000", "0 for a free one"),
        ("port", "http", "0 for a free one"),
        ("isolation", "nested", "transaction"),
        ("start_timeout", "-1", "seconds"),
        ("conf", "no_equals_sign", "key=value"),
        ("url", "mysql://x@y/z", "libpq URL"),
        ("url_env", "1BAD-NAME", "environment variable name"),
        ("migrations_models", "app.models", "MODULE:ATTR"),
    ],
)
def test_bad_values_name_setting_value_source_and_choices(
    name: str, raw: str, accepted: str
) -> None:
    env_name = "PGSANDBOX_" + name.upper()
    with pytest.raises(SettingError) as info:
        resolve({}, {env_name: raw}, {})
    message = str(info.value)
    assert repr(name) in message
    assert raw in message
    assert f"environment variable {env_name}" in message
    assert accepted in message


@pytest.mark.parametrize(
    ("work_mem", "conf", "expected"),
    [
        ("32", (), (("work_mem", "32MB"),)),
        ("64MB", (), (("work_mem", "64MB"),)),
        ("0", (), ()),
        ("32", ("work_mem=1MB", "jit=off"), (("work_mem", "1MB"), ("jit", "off"))),
    ],
)
def test_work_mem_goes_to_the_server_unless_conf_sets_it(
    work_mem: str, conf: tuple[str, ...], expected: tuple[tuple[str, str], ...]
) -> None:
    settings = resolve({"work_mem": work_mem, "conf": list(conf) or None}, {}, {})
    assert settings.server_conf == expected


@pytest.mark.parametrize("bad", ["-1", "lots", "2000000"])
def test_work_mem_must_be_megabytes(bad: str) -> None:
    with pytest.raises(SettingError, match="work_mem"):
        resolve({"work_mem": bad}, {}, {})


@pytest.mark.parametrize("bad", ["App", "pg_app", "9app", "app-role", "a" * 51, "app;drop"])
def test_role_names_are_refused_unless_plain_lower_case(bad: str) -> None:
    with pytest.raises(SettingError, match="'role'"):
        resolve({}, {"PGSANDBOX_ROLE": bad}, {})


@pytest.mark.parametrize("good", ["app", "app_rw", "a" * 50, "  shop2  "])
def test_role_names_that_are_taken(good: str) -> None:
    assert resolve({}, {"PGSANDBOX_ROLE": good}, {}).role == good.strip()


def test_env_from_each_source_and_as_shown() -> None:
    from pytest_pgsandbox._engine.appenv import render
    from pytest_pgsandbox._engine.urls import ConnInfo

    flag = resolve({"env": ["DATABASE_URL={sync_url}"]}, {}, {})
    env = resolve({}, {"PGSANDBOX_ENV": "A={host} 'B=x {port}'"}, {})
    ini = resolve({}, {}, {"env": ["PGHOST={host}", "PGPASSWORD={password}"]})
    assert flag.env == (("DATABASE_URL", "{sync_url}"),)
    assert env.env == (("A", "{host}"), ("B", "x {port}"))
    assert ini.shown("env") == "PGHOST={host}, PGPASSWORD={password}"
    info = ConnInfo("127.0.0.1", 5433, "app", "s3cret", "db1")
    found = render(ini.env, info)
    assert found == {"PGHOST": "127.0.0.1", "PGPASSWORD": "s3cret"}
    shown = render((*ini.env, *flag.env, ("APP_PASSWORD", "s3cret")), info, masked=True)
    assert "s3cret" not in str(shown)
    assert shown["DATABASE_URL"] == "postgresql+psycopg://app:***@127.0.0.1:5433/db1"


@pytest.mark.parametrize("bad", ["DATABASE_URL", "=x", "1A={url}", "A={nope}", "A={url!r}"])
def test_env_items_must_be_name_and_known_placeholders(bad: str) -> None:
    with pytest.raises(SettingError, match="pg_env"):
        resolve({}, {}, {"env": [bad]})
