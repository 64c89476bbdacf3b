"""Database names, URLs and password masking (no server)."""

from __future__ import annotations

import pytest

from pytest_pgsandbox._engine.naming import MAX_IDENTIFIER
from pytest_pgsandbox._engine.naming import database_name
from pytest_pgsandbox._engine.servers import external
from pytest_pgsandbox._engine.servers.provision import make_label
from pytest_pgsandbox._engine.servers.provision import parse_label
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox.errors import ServerUnreachable
from pytest_pgsandbox.errors import UnsafeOperation


def test_database_names_are_safe_and_unique() -> None:
    assert database_name("session", "ab12cd34", "gw0") == "pgsandbox_session_ab12cd34_gw0"
    long_a = database_name("session", "ab12cd34", "gw0", "x" * 80)
    long_b = database_name("session", "ab12cd34", "gw0", "x" * 79 + "y")
    assert len(long_a.encode()) <= MAX_IDENTIFIER
    assert long_a != long_b
    assert database_name("s", "R", "Gw-1") == "pgsandbox_s_r_gw_1"


def test_socket_and_tcp_urls() -> None:
    info = ConnInfo(host="/tmp/pg x", port=5432, user="postgres", password="p@ss/w", dbname="db")
    assert info.url() == "postgresql://postgres:p%40ss%2Fw@/db?host=/tmp/pg%20x&port=5432"
    assert info.url(masked=True) == "postgresql://postgres:***@/db?host=/tmp/pg%20x&port=5432"
    tcp = ConnInfo(host="127.0.0.1", port=5433, user="u", password=None, dbname="d")
    assert tcp.url() == "postgresql://u@127.0.0.1:5433/d"
    assert "p@ss" not in repr(info)


def test_from_conninfo_keeps_extra_parameters() -> None:
    info = ConnInfo.from_conninfo("postgresql://me:secret@db.example:6543/app?sslmode=require")
    assert (info.host, info.port, info.user, info.password, info.dbname) == (
        "db.example",
        6543,
        "me",
        "secret",
        "app",
    )
    assert info.url() == "postgresql://me:secret@db.example:6543/app?sslmode=require"


def test_mask_hides_passwords_in_urls_and_keyword_strings() -> None:
    text = (
        "could not connect to postgresql://me:s3cr%21t@host/db and "
        "postgresql+psycopg://u:pw@h:1/d; dsn: host=x password='a b' user=y"
    )
    masked = mask(text)
    for secret in ("s3cr%21t", ":pw@", "'a b'"):
        assert secret not in masked
    assert "postgresql://me:***@host/db" in masked
    assert "password=***" in masked


def test_labels_round_trip_and_reject_foreign_comments() -> None:
    label = make_label({"run": "abc", "kind": "session"})
    data = parse_label(label)
    assert data is not None
    assert data["run"] == "abc"
    assert parse_label("my production database") is None
    assert parse_label("pgsandbox:not json") is None
    assert parse_label(None) is None


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("", True),
        ("/run/postgresql", True),
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("db.internal", False),
        ("10.0.0.5", False),
        ("postgres", False),  # a CI service's host name: allowed only when listed
    ],
)
def test_which_hosts_are_this_machine(host: str, local: bool) -> None:
    assert external.is_local(host) is local


def test_other_hosts_need_to_be_allowed() -> None:
    info = ConnInfo(host="postgres", port=5432, user="ci", password="pw-never-shown")
    with pytest.raises(UnsafeOperation, match="--pg-allow-hosts=postgres") as caught:
        external.check_host(info, (), "url from the command line")
    assert "pw-never-shown" not in str(caught.value)
    external.check_host(info, ("postgres",), "url")
    external.check_host(info, ("*",), "url")


@pytest.mark.parametrize(
    ("printed", "url"),
    [
        ("postgresql://a:b@h:1/d\n", "postgresql://a:b@h:1/d"),
        ("host=h port=1 user=a\n", "host=h port=1 user=a"),
        (
            '{"engine": "postgres", "host": "db", "port": 6432, "username": "app", '
            '"password": "p@ss:/", "dbname": "shop"}',
            "postgresql://app:p%40ss%3A%2F@db:6432/shop",
        ),
    ],
)
def test_what_a_url_command_may_print(printed: str, url: str) -> None:
    assert external.parse_printed(printed, "url_command") == url


def test_unreadable_command_output_is_never_echoed() -> None:
    with pytest.raises(ServerUnreachable, match="printed 12 characters") as caught:
        external.parse_printed("s3cr3t-token", "url_command")
    assert "s3cr3t" not in str(caught.value)
