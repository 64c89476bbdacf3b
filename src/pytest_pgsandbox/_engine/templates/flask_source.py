"""Flask sources: the application made by its own factory, Flask-Migrate's upgrade in it.

``flask:MODULE:FACTORY`` names an application factory (Flask's pattern: a function that
returns a configured ``Flask`` app). A project as ``flask db init`` writes it has a
``migrations/alembic.ini`` without ``script_location``, an ``env.py`` that calls
``fileConfig(config.config_file_name)`` unguarded, reads ``current_app`` and takes its URL
from the app's Flask-SQLAlchemy engine. So the build does what ``flask db upgrade`` does,
with one difference: the app is made with the template's URL.

- While the factory runs, every ``SQLAlchemy.init_app(app)`` (Flask-SQLAlchemy) first sets
  ``app.config["SQLALCHEMY_DATABASE_URI"]``, the key Flask-SQLAlchemy documents, to the
  template's URL: whatever the factory's configuration says (``sqlite:///app.db``,
  ``DATABASE_URL``), the app's default engine is the template's. Other binds keep their URLs.
- ``flask_migrate.upgrade()`` runs inside ``app.app_context()``, on the folder the app's
  ``Migrate`` names (relative to the rootdir); ``fileConfig`` changes nothing, as for
  ``alembic:`` sources.
- Every connection to another database (a bind, an engine the app makes itself) is refused
  (:mod:`.guard`), and afterwards the template must hold the history's heads.
- Flask-Migrate logs an error and calls ``sys.exit(1)``: the build fails with the logged
  error, once.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import traceback
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_pgsandbox._engine.templates import alembic_source
from pytest_pgsandbox._engine.templates.guard import ForeignConnection
from pytest_pgsandbox._engine.templates.guard import only_to
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox.errors import TemplateError

DEFAULT_DIR = "migrations"  # Flask-Migrate's default directory
FIX = (
    "The flask: source gives the template's URL to the app's default Flask-SQLAlchemy "
    "database (SQLALCHEMY_DATABASE_URI) only; binds (SQLALCHEMY_BINDS) and engines the app "
    "makes itself keep their URLs. Fix: name a factory (e.g. in your tests) that leaves such "
    "databases out of the configuration it uses, or set pg_url_env to the variable the app "
    "reads its URL from (e.g. DATABASE_URL)."
)


def migration_files(folder: Path) -> list[tuple[str, bytes]]:
    """What the template's hash covers of a migrations folder: every file in it."""
    if not folder.is_dir():
        return []
    return [
        (f"{folder.name}/{p.relative_to(folder)}", p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]


@contextlib.contextmanager
def _database_uri(url: str) -> Iterator[list[object]]:
    """While inside, Flask-SQLAlchemy's ``init_app`` gives every app ``url`` as its
    ``SQLALCHEMY_DATABASE_URI``. Yields the URIs the apps had before (``None``: unset)."""
    had: list[object] = []
    try:
        from flask_sqlalchemy import SQLAlchemy
    except ImportError:
        yield had
        return
    original = SQLAlchemy.__dict__["init_app"]

    def init_app(self: Any, app: Any, *args: Any, **kwargs: Any) -> Any:
        had.append(app.config.get("SQLALCHEMY_DATABASE_URI"))
        app.config["SQLALCHEMY_DATABASE_URI"] = url
        return original(self, app, *args, **kwargs)

    SQLAlchemy.init_app = init_app  # type: ignore[method-assign]
    try:
        yield had
    finally:
        SQLAlchemy.init_app = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _engines_disposed() -> Iterator[None]:
    """Engines that connected while inside are disposed afterwards: a pooled connection left
    on the template would keep it from being renamed and copied."""
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:
        yield
        return
    seen: dict[int, Any] = {}

    def engine_connect(connection: Any) -> None:
        seen[id(connection.engine)] = connection.engine

    event.listen(Engine, "engine_connect", engine_connect)
    try:
        yield
    finally:
        event.remove(Engine, "engine_connect", engine_connect)
        for engine in seen.values():
            engine.dispose()


@contextlib.contextmanager
def _errors_logged() -> Iterator[list[str]]:
    """The errors Flask-Migrate logs before it calls ``sys.exit(1)``."""
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record.getMessage())

    logger = logging.getLogger("flask_migrate")
    handler = Collect(logging.ERROR)
    logger.addHandler(handler)
    try:
        yield found
    finally:
        logger.removeHandler(handler)


def _where(exc: BaseException, limit: int = 3) -> str:
    """The last frames of the traceback in the project's code (the app, env.py, migrations)."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not {"site-packages", "dist-packages", "pytest_pgsandbox"} & set(Path(f.filename).parts)
    ][-limit:]
    return "".join(f"\n  at {f.filename}:{f.lineno} in {f.name}" for f in frames)


def _make_app(shown: str, factory: Any) -> Any:
    from flask import Flask

    if isinstance(factory, Flask):
        raise TemplateError(
            f"{shown} is a Flask application, made when its module was imported, so its "
            "database was chosen then. Name an application factory instead (a function that "
            "creates and returns the app), or build the schema from the models with "
            "metadata:MODULE:db."
        )
    if not callable(factory):
        raise TemplateError(f"{shown} is not callable: name a function that returns the app.")
    try:
        required = [
            p.name
            for p in inspect.signature(factory).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        required = []
    if required:
        raise TemplateError(
            f"{shown} needs arguments ({', '.join(required)}); the factory is called with "
            "none. Name a function that calls it with the configuration your tests use, "
            "e.g. `def make_app(): return create_app(TestConfig)`."
        )
    app = factory()
    if not isinstance(app, Flask):
        raise TemplateError(f"{shown} returned a {type(app).__name__}, not a Flask app.")
    return app


def upgrade(
    shown: str,
    load: Callable[[], Any],
    info: ConnInfo,
    url: str,
    base: Path,
    hashed: Callable[[Path], bool],
) -> None:
    """``flask db upgrade`` into the database of ``info`` (``url``: its SQLAlchemy URL), on
    the app that ``load()`` names the factory of.

    ``hashed(folder)``: whether the template's hash covers the migrations folder the app
    names; one it does not cover is refused, or a changed migration would reuse a template.
    """
    try:
        import flask_migrate  # type: ignore[import-untyped]
        from alembic.config import Config
        from alembic.script import ScriptDirectory
    except ImportError:
        raise TemplateError(
            f"{shown} needs Flask and Flask-Migrate: pip install 'pytest-pgsandbox[flask]'"
        ) from None
    with (
        only_to(info, fix=FIX) as guard,
        alembic_source.logging_left_alone(),
        _engines_disposed(),
        _errors_logged() as logged,
    ):
        try:
            with _database_uri(url):
                app = _make_app(shown, load())
            migrate = app.extensions.get("migrate")
            if migrate is None:
                raise TemplateError(
                    f"{shown}: the app has no Flask-Migrate (Migrate(app, db) or "
                    "migrate.init_app(app, db) in the factory). Without migrations, build "
                    "the schema from the models with metadata:MODULE:db."
                )
            folder = Path(migrate.directory)
            folder = folder if folder.is_absolute() else base / folder
            if not (folder / "alembic.ini").is_file():
                raise TemplateError(
                    f"{shown}: the app's migrations folder {folder} has no alembic.ini; "
                    "create it with `flask db init` (the folder is Migrate(directory=...), "
                    "relative to the folder pytest runs in)."
                )
            if not hashed(folder):
                try:
                    glob = f"{folder.resolve().relative_to(base.resolve())}/**/*"
                except ValueError:
                    glob = f"{folder}/**/*"
                raise TemplateError(
                    f"{shown}: the app's migrations folder is {folder}, and the template's "
                    f"hash covers {base / DEFAULT_DIR}: add '{glob}' to template_inputs so "
                    "that a changed migration builds a new template."
                )
            with app.app_context():
                flask_migrate.upgrade(directory=str(folder))
        except ForeignConnection as exc:
            raise TemplateError(f"{shown}: {exc}") from None
        except TemplateError:
            raise
        except SystemExit as exc:
            if guard.refused is not None:
                raise TemplateError(f"{shown}: {guard.refused}") from None
            detail = logged[-1].removeprefix("Error: ") if logged else ""
            raise TemplateError(
                f"{shown}: Flask-Migrate's upgrade failed: {detail} (it then called "
                f"sys.exit({exc.code!r}))"
                if detail
                else f"{shown} {alembic_source.what(exc)}"
            ) from None
        except Exception as exc:
            if guard.refused is not None:
                raise TemplateError(f"{shown}: {guard.refused}") from None
            raise TemplateError(f"{shown} {alembic_source.what(exc)}{_where(exc)}") from None
    if guard.refused is not None:  # the user's code caught the refusal
        raise TemplateError(f"{shown}: {guard.refused}")
    config = Config()
    config.set_main_option("script_location", str(folder))
    alembic_source.check_heads(
        set(ScriptDirectory.from_config(config).get_heads()),
        info,
        f"{shown}: flask db upgrade",
        "Check that the app's Flask-Migrate uses the Flask-SQLAlchemy db whose engine "
        "env.py migrates.",
    )
