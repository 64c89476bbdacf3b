"""The shape of Flask-Migrate's env.py: fileConfig unguarded, the URL and the metadata taken
from the app's Flask-SQLAlchemy db through current_app. pgsandbox runs it unedited."""

from logging.config import fileConfig

from alembic import context
from flask import current_app

config = context.config
fileConfig(config.config_file_name)

db = current_app.extensions["migrate"].db
with db.engine.connect() as connection:
    context.configure(connection=connection, target_metadata=db.metadata)
    with context.begin_transaction():
        context.run_migrations()
