"""Django projects: a template per database alias, migrated once per fingerprint.

The fingerprint is read from the project's files and settings, without a database: the
Django version, per alias its name, ENGINE and TEST settings, for every app in
``INSTALLED_APPS`` order the bytes of its migration files (``MIGRATION_MODULES`` honoured,
third-party and contrib apps included), the models modules of apps without migrations, and
the settings that change the schema or the rows migrations write. The build runs Django's own
``migrate`` (``run_syncdb``, as ``create_test_db`` does) and ``createcachetable`` into the
template, then closes every Django connection, since a database that has sessions cannot be
copied.

Django is imported here only inside functions, once a Django project asks for it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import re
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_pgsandbox._engine.templates.template import PREFIX
from pytest_pgsandbox._engine.templates.template import PgTemplate
from pytest_pgsandbox._engine.templates.template import ensure_built
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox._version import __version__
from pytest_pgsandbox.errors import TemplateError

# Settings that change what migrations create, or the rows they write.
SCHEMA_SETTINGS = (
    "AUTH_USER_MODEL",
    "DEFAULT_AUTO_FIELD",
    "MIGRATION_MODULES",
    "DATABASE_ROUTERS",
    "SITE_ID",
)
# Keys of an alias's TEST dict that only say where its test database is, not what is in it.
_WHERE_KEYS = {"NAME", "TEMPLATE"}
# What a settings dict keeps of OPTIONS when pointed at another server: not these.
_SERVER_OPTIONS = {"service", "passfile", "host", "hostaddr", "port", "sslmode", "sslrootcert"}


@dataclass(frozen=True)
class Alias:
    """One PostgreSQL alias of ``DATABASES`` that gets a template."""

    name: str
    source: str | None  # the project's own TEST["TEMPLATE"] (e.g. a PostGIS one), else None
    migrate: bool  # TEST["MIGRATE"]

    @property
    def family(self) -> str:
        """Old templates are reaped per alias: a switch between branches keeps a few."""
        return f"django:{self.name}"


def is_postgresql(alias: str) -> bool:
    from django.db import connections

    return bool(connections[alias].vendor == "postgresql")


def aliases() -> list[Alias]:
    """The PostgreSQL aliases whose test database is created (not mirrors), in order."""
    from django.conf import settings

    found = []
    for name, db in settings.DATABASES.items():
        test = db.get("TEST") or {}
        if test.get("MIRROR") or not is_postgresql(name):
            continue
        found.append(Alias(name, test.get("TEMPLATE"), bool(test.get("MIGRATE", True))))
    return found


def point_at(db: MutableMapping[str, Any], admin: ConnInfo) -> None:
    """Make a ``DATABASES`` entry reach ``admin``'s server as ``admin``'s role, in place."""
    db["HOST"] = admin.host
    db["PORT"] = str(admin.port)
    db["USER"] = admin.user
    db["PASSWORD"] = admin.password or ""
    options = db.get("OPTIONS")
    if isinstance(options, dict):
        for key in _SERVER_OPTIONS.intersection(options):
            del options[key]


def test_name(db: Mapping[str, Any]) -> str:
    """The test database's name, as Django's creation code makes it."""
    test = db.get("TEST") or {}
    return str(test.get("NAME") or f"test_{db.get('NAME')}")


# PostgreSQL cuts longer identifiers short, so two long names could meet after all.
_MAX_NAME = 63


def separate(databases: Mapping[str, MutableMapping[str, Any]], names: list[str]) -> dict[str, str]:
    """Before aliases ``names`` are pointed at one server: give a distinct test database
    name (``TEST["NAME"]``) to every alias that is a distinct database in the settings, so
    that no two of them become one database on our server. Call it before ``point_at``.

    Django folds aliases into one test database when their signature (``HOST``, ``PORT``,
    ``ENGINE`` and test database name) is equal; two aliases with the same ``NAME`` on two
    servers are two databases to Django, but would be one once both point at our server.
    Aliases of one signature stay one database, as Django has them, and mirrors
    (``TEST["MIRROR"]``, not in ``names``) are left to Django. The first alias of a name
    keeps it; a later one gets ``<name>_<alias>``. Returns each renamed alias's new name."""
    placed: dict[tuple[str, str, str, str], str] = {}  # a signature's test database name
    used = {test_name(databases[alias]) for alias in names}
    done: dict[str, str] = {}
    for alias in names:
        db = databases[alias]
        name = test_name(db)
        where = (str(db.get("HOST") or ""), str(db.get("PORT") or ""), str(db.get("ENGINE")))
        signature = (*where, name)
        new = placed.get(signature)
        if new is None:
            new = name
            if name in placed.values():
                new = _unique(f"{name}_{alias}", used, signature)
                used.add(new)
            placed[signature] = new
        if new != name:
            db.setdefault("TEST", {})["NAME"] = new
            done[alias] = new
    return done


def _unique(name: str, used: set[str], signature: tuple[str, ...]) -> str:
    """``name``, or a variant of it that is not in ``used`` and fits an identifier."""
    digest = hashlib.sha256(repr(signature).encode()).hexdigest()
    found = name
    for n in range(len(digest)):
        if len(found.encode()) > _MAX_NAME or found in used:
            tail = f"_{digest[: 8 + n]}"
            found = name.encode()[: _MAX_NAME - len(tail)].decode(errors="ignore") + tail
            continue
        return found
    raise TemplateError(f"no free test database name for {name!r}")  # pragma: no cover


# -- fingerprint -------------------------------------------------------------------------


def _package_files(module: str) -> list[Path] | None:
    """The files of package or module ``module``, found without importing it (its parent
    package is imported); None when there is none."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        files: list[Path] = []
        for folder in spec.submodule_search_locations:
            files.extend(
                p
                for p in sorted(Path(folder).rglob("*.py"))
                if "__pycache__" not in p.parts and p.is_file()
            )
        return files
    if spec.origin and spec.origin not in ("built-in", "frozen"):
        return [Path(spec.origin)]
    return None


def _file_of(obj: Any) -> Path | None:
    import inspect

    try:
        found = inspect.getsourcefile(obj)
    except TypeError:
        return None
    return Path(found) if found else None


def inputs(alias: str) -> Iterator[tuple[str, bytes]]:
    """(name, contents) of everything the alias's migrated schema depends on."""
    import django
    from django.apps import apps
    from django.conf import settings
    from django.db.migrations.loader import MigrationLoader
    from django.utils.module_loading import import_string

    db = settings.DATABASES[alias]
    test = {k: v for k, v in sorted((db.get("TEST") or {}).items()) if k not in _WHERE_KEYS}
    yield "django", django.get_version().encode()
    yield "pgsandbox", __version__.encode()
    yield f"alias {alias}", repr((db.get("ENGINE"), test)).encode()
    source = (db.get("TEST") or {}).get("TEMPLATE")
    if source and not str(source).startswith(PREFIX):  # the project's own, built upon
        yield f"alias {alias} built from", str(source).encode()
    for name in SCHEMA_SETTINGS:
        yield f"setting {name}", repr(getattr(settings, name, None)).encode()
    for model in apps.get_models(include_swapped=True):
        swappable = model._meta.swappable
        if swappable:
            yield f"setting {swappable}", repr(getattr(settings, swappable, None)).encode()
    for router in getattr(settings, "DATABASE_ROUTERS", ()):
        target = import_string(router) if isinstance(router, str) else type(router)
        path = _file_of(target)
        if path is not None:
            yield f"router {router}", path.read_bytes()
    for app in apps.get_app_configs():
        module, _explicit = MigrationLoader.migrations_module(app.label)
        files = _package_files(module) if module else None
        if files:
            yield f"app {app.label} {app.name} migrations {module}", str(len(files)).encode()
            for path in files:
                yield f"{module} {path.name}", path.read_bytes()
            continue
        models = app.models_module
        path = _file_of(models) if models is not None else None
        if path is None:
            yield f"app {app.label} {app.name} no models", b""
            continue
        files = _package_files(models.__name__) or [path]
        yield f"app {app.label} {app.name} models", str(len(files)).encode()
        for p in files:
            yield f"{models.__name__} {p.name}", p.read_bytes()


def fingerprint(alias: str, pg_major: int, extra: list[tuple[str, bytes]]) -> str:
    """A hash of every input of the alias's template: equal hashes, equal templates."""
    h = hashlib.sha256(f"django template\npostgresql {pg_major}\n".encode())
    for name, data in [*inputs(alias), *extra]:
        h.update(f"{name} {len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()


def coverage(extra: list[tuple[str, bytes]]) -> list[str]:
    """What each alias's hash covers, a few lines each (for ``--pg-info``)."""
    import time

    lines = []
    for alias in aliases():
        began = time.perf_counter()
        found = list(inputs(alias.name))
        seconds = time.perf_counter() - began
        apps = [name.split()[1] for name, _ in found if name.startswith("app ")]
        with_migrations = sum(" migrations " in name for name, _ in found)
        files = sum(1 for name, _ in found if name.split()[0] not in _LABELS)
        size = sum(len(data) for _, data in found)
        lines.append(
            f"django alias {alias.name}: {len(apps)} apps ({with_migrations} with migrations), "
            f"{files} files, {size / 1e6:.2f} MB, read in {seconds * 1000:.0f} ms"
        )
        settings = [name.split()[1] for name, _ in found if name.startswith("setting ")]
        lines.append(f"  settings: {', '.join(dict.fromkeys(settings))}")
        routers = [name.split()[1] for name, _ in found if name.startswith("router ")]
        if routers:
            lines.append(f"  routers' code: {', '.join(routers)}")
        if extra:
            lines.append(f"  template_inputs: {', '.join(name for name, _ in extra)}")
        if alias.source:
            lines.append(f"  built from the project's TEST TEMPLATE {alias.source}")
    return lines


_LABELS = {"django", "pgsandbox", "alias", "setting", "router", "app"}


# -- building ------------------------------------------------------------------------------

_APPLYING = re.compile(r"Applying (\S+?)\.\.\.")


def close_all() -> None:
    """Close every Django connection (and pool): a template with sessions cannot be copied."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        conn.close()
        close_pool = getattr(conn, "close_pool", None)
        if close_pool is not None:
            close_pool()


def migrator(alias: str) -> Callable[[ConnInfo], None]:
    """What migrates the alias's schema into a database (the template being built)."""

    def fill(info: ConnInfo) -> None:
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connections

        close_all()
        conn = connections[alias]
        targets = [settings.DATABASES[alias]]
        if conn.settings_dict is not targets[0]:
            targets.append(conn.settings_dict)
        before = [dict(t) for t in targets]
        for t in targets:
            point_at(t, info)
            t["NAME"] = info.dbname
        out = io.StringIO()
        try:
            call_command(
                "migrate",
                database=alias,
                run_syncdb=True,
                interactive=False,
                verbosity=1,
                stdout=out,
                stderr=out,
            )
            call_command("createcachetable", database=alias, stdout=out, stderr=out)
        except Exception as exc:
            raise TemplateError(_failure(alias, out.getvalue(), exc)) from None
        finally:
            close_all()
            for t, old in zip(targets, before, strict=True):
                t.clear()
                t.update(old)
        with connect(info) as check:  # nobody may be left connected to it
            check.execute("SELECT 1")

    return fill


def _failure(alias: str, output: str, exc: BaseException) -> str:
    """One message: the alias, the migration that failed and the server's error."""
    applying = _APPLYING.findall(output)
    last_line = output.rstrip().splitlines()[-1] if output.strip() else ""
    where = "while Django ran migrate (run_syncdb) and createcachetable"
    if applying and not last_line.endswith("OK"):
        app, _, migration = applying[-1].partition(".")
        where = f"in migration {migration} of app {app}"
    cause: BaseException | None = exc
    server = None
    while cause is not None:
        module = type(cause).__module__
        if module.startswith(("psycopg", "django.db")):
            server = cause
        cause = cause.__cause__ or cause.__context__
    error = server or exc
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"Django's migrations for database alias {alias!r} failed {where}: "
        f"{type(error).__name__}: {text}\n"
        f"Run `python manage.py migrate` against an empty database to see it in full; the "
        f"template is built again once the migration or what it reads changes."
    )


def ensure(
    admin: ConnInfo,
    alias: Alias,
    digest: str,
    run_id: str,
    timeout: float,
) -> PgTemplate:
    """The alias's template on ``admin``'s server: found, or migrated now (once, under the
    server-wide lock of that template's name: one process of a run builds, the others wait)."""
    return ensure_built(
        admin,
        digest,
        migrator(alias.name),
        run_id,
        timeout,
        source=alias.source,
        family=alias.family,
    )


def keep_copy(
    admin: ConnInfo,
    name: str,
    template: PgTemplate,
    run_id: str,
    usable: Callable[[str], bool] | None = None,
) -> str:
    """For ``--reuse-db``: make sure the kept test database ``name`` is a copy of
    ``template``; a kept copy of another template (another branch's migrations), or one
    ``usable`` refuses, is made again. Returns what was done: "kept", "made", "remade" or
    "foreign" (a database we did not make: left to Django as it is)."""
    from pytest_pgsandbox._engine.servers import provision

    with connect(admin) as conn:
        if provision.exists(conn, name):
            label = provision.database_label(conn, name)
            if label is None:
                return "foreign"
            if label.get("template") == template.fingerprint and (usable is None or usable(name)):
                return "kept"
            provision.drop_database(conn, name)
            done = "remade"
        else:
            done = "made"
        label_data = {"kind": "django-test", "template": template.fingerprint, "run": run_id}
        provision.create_database(conn, name, label_data, template.name)
    return done
