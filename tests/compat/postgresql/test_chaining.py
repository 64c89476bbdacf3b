"""pytest-postgresql's test_chaining.py, behaviour for behaviour: ``postgresql_noproc`` with
``depends_on`` adds a layer on top of another fixture's template."""

from __future__ import annotations

import pytest

TESTS = """
import psycopg

from pytest_pgsandbox.postgresql import factories


def load_schema(*, host, port, user, dbname, password, autocommit):
    with psycopg.connect(host=host, port=port, user=user, dbname=dbname, password=password) as c:
        c.autocommit = autocommit
        c.execute("CREATE TABLE schema_table (id serial PRIMARY KEY, name varchar);")
        c.commit()


def load_data(*, host, port, user, dbname, password, autocommit):
    with psycopg.connect(host=host, port=port, user=user, dbname=dbname, password=password) as c:
        c.execute("INSERT INTO schema_table (name) VALUES ('data_layer');")
        c.execute("CREATE TABLE data_table (id serial PRIMARY KEY, val varchar);")


def load_more_data(*, host, port, user, dbname, password, autocommit):
    with psycopg.connect(host=host, port=port, user=user, dbname=dbname, password=password) as c:
        c.execute("INSERT INTO schema_table (name) VALUES ('more_data_layer');")
        c.execute("CREATE TABLE more_data_table (id serial PRIMARY KEY, extra varchar);")


base_proc = factories.postgresql_proc(load=[load_schema])
seeded_noproc = factories.postgresql_noproc(depends_on="base_proc", load=[load_data])
client_layered = factories.postgresql("seeded_noproc")
more_seeded_noproc = factories.postgresql_noproc(depends_on="seeded_noproc", load=[load_more_data])
client_deep_layered = factories.postgresql("more_seeded_noproc")
client_base = factories.postgresql("base_proc")

TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"


def test_chaining_two_layers(client_layered):
    assert client_layered.execute(TABLES).fetchall() == [("data_table",), ("schema_table",)]
    assert client_layered.execute("SELECT name FROM schema_table").fetchall() == [("data_layer",)]


def test_chaining_three_layers(client_deep_layered):
    tables = client_deep_layered.execute(TABLES).fetchall()
    assert tables == [("data_table",), ("more_data_table",), ("schema_table",)]
    names = client_deep_layered.execute("SELECT name FROM schema_table ORDER BY id").fetchall()
    assert names == [("data_layer",), ("more_data_layer",)]


def test_the_base_layer_is_untouched(client_base):
    assert client_base.execute(TABLES).fetchall() == [("schema_table",)]
    assert client_base.execute("SELECT count(*) FROM schema_table").fetchone() == (0,)


def test_inheritance(base_proc, seeded_noproc, more_seeded_noproc):
    for layer in (seeded_noproc, more_seeded_noproc):
        assert layer.host == base_proc.host
        assert layer.port == base_proc.port
        assert layer.user == base_proc.user
        assert layer.password == base_proc.password
    names = {base_proc.template_dbname, seeded_noproc.template_dbname,
             more_seeded_noproc.template_dbname}
    assert len(names) == 3
    assert seeded_noproc.dbname == "tests_base_proc"
"""


def test_layers(ppg: pytest.Pytester) -> None:
    ppg.makepyfile(test_chain=TESTS)
    ppg.runpytest_subprocess().assert_outcomes(passed=4)


def test_depends_on_another_kind_of_fixture_is_an_error(ppg: pytest.Pytester) -> None:
    ppg.makepyfile(
        """
        import pytest
        from pytest_pgsandbox.postgresql import factories

        @pytest.fixture(scope="session")
        def not_a_proc():
            return object()

        layer = factories.postgresql_noproc(depends_on="not_a_proc")
        client = factories.postgresql("layer")

        def test_it(client):
            pass
        """
    )
    result = ppg.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*depends_on='not_a_proc' is a object, not a fixture made by*"])
