"""Custom fixtures the way pytest-pgsql's documentation makes them."""

import json

import pytest_pgsandbox.pgsql as pytest_pgsql

# An engine with its own JSON serializer, and database fixtures on it.
jengine = pytest_pgsql.create_engine_fixture("jengine", json_serializer=json.dumps)
jdb = pytest_pgsql.PostgreSQLTestDB.create_fixture("jdb", "jengine")
tjdb = pytest_pgsql.TransactedPostgreSQLTestDB.create_fixture("tjdb", "jengine")
module_db = pytest_pgsql.TransactedPostgreSQLTestDB.create_fixture("module_db", scope="module")
