"""A URL libpq cannot read, or one whose port is not a number, is a usage error that names
the setting and where it came from, with the password masked; never a crash, never the
default port."""

from __future__ import annotations

import pytest

from pgsb_helpers import clean_env
from pgsb_helpers import pgsandbox

ONE_TEST = "def test_one(pg):\n    pg.execute('SELECT 1')\n"
SECRET = "s3cr3t-pw-xyz"
BAD = {
    "unclosed IPv6 bracket": f"postgresql://u:{SECRET}@[::1/db",
    "port is not a number": f"postgresql://u:{SECRET}@localhost:abc/db",
    "second port is not a number": f"postgresql://u:{SECRET}@h1:5432,h2:x5/db",
}


@pytest.mark.parametrize("url", BAD.values(), ids=BAD.keys())
@pytest.mark.parametrize("where", ["flag", "env", "ini"])
def test_a_malformed_url_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, url: str, where: str
) -> None:
    clean_env(monkeypatch)
    pytester.makepyfile(ONE_TEST)
    args: list[str] = []
    if where == "flag":
        args.append(f"--pg-url={url}")
        source = "the command line (--pg-url)"
    elif where == "env":
        monkeypatch.setenv("PGSANDBOX_URL", url)
        source = "environment variable PGSANDBOX_URL"
    else:
        pytester.makeini(f"[pytest]\npg_url = {url}\n")
        source = "pg_url in tox.ini"
    result = pytester.runpytest_subprocess(*args, timeout=60)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "pgsandbox setting 'url' has the invalid value 'postgresql://u:***@" in output
    assert f"it came from {source}" in output
    assert SECRET not in output
    assert "INTERNALERROR" not in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) <= 3


def test_a_port_that_is_not_a_number_in_pg_variables(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_env(monkeypatch)
    monkeypatch.setenv("PGPORT", "abc")
    monkeypatch.setenv("PGPASSWORD", SECRET)
    pytester.makepyfile(ONE_TEST)
    result = pytester.runpytest_subprocess("--pg-server=url", timeout=60)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 1  # the session stops before any test
    result.assert_outcomes()
    assert "libpq PG* variables" in output
    assert "the port 'abc' is not a number from 1 to 65535" in output
    assert SECRET not in output


@pytest.mark.parametrize("url", BAD.values(), ids=BAD.keys())
def test_gc_with_a_malformed_url_says_so_in_one_line(pytester: pytest.Pytester, url: str) -> None:
    result = pgsandbox(pytester, "gc", f"--url={url}")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 1
    assert "setting 'url' has the invalid value" in output
    assert SECRET not in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1
