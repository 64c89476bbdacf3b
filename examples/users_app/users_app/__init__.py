"""A tiny application with users, to show a schema built once from Alembic migrations."""
