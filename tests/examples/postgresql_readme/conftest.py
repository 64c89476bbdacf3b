"""pytest-postgresql's README examples, with only the import line changed."""

from pathlib import Path

import psycopg

from pytest_pgsandbox.postgresql import factories

HERE = Path(__file__).parent


def load_database(**kwargs):
    with psycopg.connect(**kwargs) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE stories (id serial PRIMARY KEY, name varchar);")
            cur.execute("INSERT INTO stories (name) VALUES ('Silmarillion'), ('The Expanse');")


def load_this_callable(**kwargs):
    with psycopg.connect(**kwargs) as conn:
        conn.execute("INSERT INTO customers (name) VALUES ('from a callable')")


def load_schema(*, host, port, user, dbname, password, autocommit=False):
    with psycopg.connect(host=host, port=port, user=user, dbname=dbname, password=password) as c:
        c.execute("CREATE TABLE schema_table (id serial PRIMARY KEY, name varchar);")


def load_data(*, host, port, user, dbname, password, autocommit=False):
    with psycopg.connect(host=host, port=port, user=user, dbname=dbname, password=password) as c:
        c.execute("INSERT INTO schema_table (name) VALUES ('data_layer');")


def load_more_data(*, host, port, user, dbname, password, autocommit=False):
    with psycopg.connect(host=host, port=port, user=user, dbname=dbname, password=password) as c:
        c.execute("INSERT INTO schema_table (name) VALUES ('more_data_layer');")


# "Quick start" and "Template database": load once, a fresh copy per test.
postgresql_proc = factories.postgresql_proc(load=[load_database])
postgresql = factories.postgresql("postgresql_proc")
postgresql_async = factories.postgresql_async("postgresql_proc")

# "Customizing fixtures"
postgresql_my_proc = factories.postgresql_proc(port=None, unixsocketdir="/var/run")
postgresql_my = factories.postgresql("postgresql_my_proc")
postgresql_my_async = factories.postgresql_async("postgresql_my_proc")

# "Pre-populating the database for tests"
postgresql_loaded_proc = factories.postgresql_proc(
    load=[HERE / "schemafile.sql", "conftest.load_this_callable", load_this_callable]
)
postgresql_loaded = factories.postgresql("postgresql_loaded_proc")

# "load_autocommit": a statement that cannot run in a transaction block
postgresql_autocommit_proc = factories.postgresql_proc(
    load=[HERE / "schemafile.sql", HERE / "with_vacuum.sql"], load_autocommit=True
)
postgresql_autocommit = factories.postgresql("postgresql_autocommit_proc")

# "Connecting to an existing PostgreSQL database" / "in Docker"
postgresql_in_docker = factories.postgresql_noproc()
postgresql_docker = factories.postgresql("postgresql_in_docker", dbname="test")

# "Chaining"
base_proc = factories.postgresql_proc(load=[load_schema])
seeded_noproc = factories.postgresql_noproc(depends_on="base_proc", load=[load_data])
more_seeded_noproc = factories.postgresql_noproc(depends_on="seeded_noproc", load=[load_more_data])
client = factories.postgresql("more_seeded_noproc")
