"""What a test starts from: the third stage (settings → server → **template** → isolation).

``template`` builds the schema once per content hash from Alembic, SQLAlchemy metadata, SQL
files or a callable, with extensions and seed data; ``scenario`` and ``scenario_files`` load
named data sets (per-table CSV plus a manifest) into scenario templates on top of it;
``catalog`` reads what a database holds (tables, columns, keys, load order).

May import: the shared vocabulary, ``clock``, ``servers`` (to create databases and roles),
the package's ``errors``, ``settings`` and ``_version``. Never isolation, drivers or the
façade.
"""
