"""The shape of many projects' env.py: the URL comes from the application's own settings, not
from alembic.ini. pg_url_env = DATABASE_URL makes that the template's URL while it is built."""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from library_app import models  # noqa: F401 - registers the tables
from library_app.config import database_url

config = context.config
assert config.config_file_name is not None
fileConfig(config.config_file_name)

connectable = create_engine(database_url())
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=SQLModel.metadata)
    with context.begin_transaction():
        context.run_migrations()
connectable.dispose()
