"""Under xdist, a session that cannot start (server, template, scenario) ends as it does
without xdist: the same one message, once, and exit code 1; never an INTERNALERROR."""

from __future__ import annotations

import re

import pytest

from pgsb_helpers import clean_env

TESTS = """
import pytest


@pytest.mark.parametrize("n", range(4))
def test_plain(pg, n):
    pass


{extra}
"""
SCENARIO_TEST = """
@pytest.mark.pg(scenario="no_such_scenario")
def test_with_a_scenario(pg):
    pass
"""
CAUSES = {
    "template": ("pg_schema = sql:schema.sql\n", "", "the template could not be built"),
    "scenario": ("", SCENARIO_TEST, "no scenario 'no_such_scenario'"),
    "server": ("pg_conf = no_such_setting=1\n", "", 'parameter "no_such_setting"'),
}


def _message(output: str) -> str:
    """The session's closing message, with the per-run server folder left out."""
    found = re.findall(r"^! _pytest\.outcomes\.Exit: (.*?) !$", output, re.M | re.S)
    assert len(found) == 1, output
    return re.sub(r"/[0-9a-f]{8}/data|\d{4}-\d\d-\d\d [\d:.]+ \w+ \[\d+\]", "", found[0])


@pytest.mark.slow
@pytest.mark.parametrize("cause", CAUSES)
def test_the_same_one_message_with_and_without_xdist(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, runtime: object, cause: str
) -> None:
    clean_env(monkeypatch)
    ini, extra, expected = CAUSES[cause]
    (pytester.path / "schema.sql").write_text("CREATE TABLE t (id int);\nSELEC oops;\n")
    pytester.makeini("[pytest]\n" + ini)
    pytester.makepyfile(test_stop=TESTS.format(extra=extra))
    messages = []
    for args in ((), ("-n", "2")):
        result = pytester.runpytest_subprocess("-p", "no:randomly", *args, timeout=180)
        output = result.stdout.str() + result.stderr.str()
        assert result.ret == 1, output
        assert "INTERNALERROR" not in output
        assert output.count(expected) == 1, output
        messages.append(_message(result.stdout.str()))
    assert messages[0] == messages[1]
