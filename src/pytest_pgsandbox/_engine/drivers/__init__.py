"""The test's database through the driver the user already uses.

``aio`` (async psycopg and asyncpg), ``pg2`` (psycopg2) and ``sqla`` (SQLAlchemy engines
and sessions), each placed inside the isolation a test runs under.

May import: the shared vocabulary, ``isolation`` (to join the test's transaction), the
package's ``errors``. Never the façade. Each driver is imported only when it is used.
"""
