"""The database URL, from the environment as in production."""

import os


def database_url() -> str:
    url = os.environ.get("DATABASE_URL", "postgresql://localhost/library")
    return url.replace("postgresql://", "postgresql+psycopg://", 1)
