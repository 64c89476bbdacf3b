"""A Flask app as the Flask and Flask-SQLAlchemy docs lay one out: an application factory,
extensions made once and bound in it, the database URL from the environment.

Nothing here knows about the tests: pgsandbox builds the template by calling create_app()
(``pg_schema = flask:tasks_app:create_app``), and the tests point db at their database.
"""

import os
from typing import Any

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()
migrate = Migrate()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("DATABASE_URL", "sqlite:///tasks.db")
    if config:
        app.config.from_mapping(config)
    db.init_app(app)
    migrate.init_app(app, db)

    from tasks_app import views

    app.register_blueprint(views.bp)
    return app
