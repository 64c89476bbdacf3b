"""The template database: the schema (and baseline data) built once, copied for tests.

Its name is ``pgsandbox_tpl_<hash>``, where the hash covers every input: the files of each
schema and seed source, the extensions, the PostgreSQL major version and the plugin version.
A server that already has a template of that name is never asked to build it again; a changed
input gives another name, so a stale template is never used. Building happens under an
advisory lock, so concurrent runs and xdist workers on one server build it once.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import time
import traceback
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors
from psycopg import sql

from pytest_pgsandbox._engine.clock import dbclock
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers import roles
from pytest_pgsandbox._engine.stackroom import with_room
from pytest_pgsandbox._engine.templates import alembic_source
from pytest_pgsandbox._engine.templates import flask_source
from pytest_pgsandbox._engine.templates import scenario
from pytest_pgsandbox._engine.templates.guard import only_to
from pytest_pgsandbox._engine.templates.guard import redirects
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox._version import __version__
from pytest_pgsandbox.errors import ScenarioError
from pytest_pgsandbox.errors import TemplateError

PREFIX = "pgsandbox_tpl_"
KEEP_OLD = 3  # templates of earlier inputs kept on a server, newest first
LOCK_SECONDS = 900  # how long to wait for another process building the same template


@dataclass(frozen=True)
class Source:
    """One schema or seed source, e.g. ``sql:db/schema`` or ``metadata:app.models:Base``."""

    kind: str
    target: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"


@dataclass(frozen=True)
class TemplateSpec:
    """Everything a template is built from; ``base`` anchors relative paths."""

    schema: tuple[Source, ...]
    seed: tuple[Source, ...] = ()
    extensions: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()  # more inputs of the hash: file globs, env:NAME
    base: Path = Path()
    scenarios_dir: Path | None = None  # where ``scenario:NAME`` sources are; base-relative
    role: str | None = None  # created before the schema, which may grant to it
    env: tuple[tuple[str, str], ...] = ()  # the env setting: set, on the template, while built

    @property
    def scenarios(self) -> Path:
        return self.path(str(self.scenarios_dir or scenario.DEFAULT_DIR))

    @property
    def empty(self) -> bool:
        return not (self.schema or self.seed or self.extensions)

    def path(self, target: str) -> Path:
        path = Path(target).expanduser()
        return path if path.is_absolute() else self.base / path


@dataclass(frozen=True)
class PgTemplate:
    """A template database on a server: tests' databases are copies of it."""

    name: str
    fingerprint: str
    reused: bool
    build_seconds: float = 0.0
    # Where the build's own code connected that pgsandbox sent to the template (masked).
    redirected: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.reused:
            return f"template reused: {self.fingerprint[:12]} (no migrations ran)"
        line = f"template built: {self.fingerprint[:12]} in {self.build_seconds:.2f} s"
        if self.redirected:
            line += (
                "; the build's connections to " + ", ".join(self.redirected) + " (the "
                "application's settings name the session's database) went to the template"
            )
        return line


# -- fingerprint -------------------------------------------------------------------------


def _files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(
        p
        for p in folder.rglob(pattern)
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def sql_files(spec: TemplateSpec, src: Source) -> list[Path]:
    path = spec.path(src.target)
    if path.is_dir():
        found = _files(path, "*.sql")
        if not found:
            raise TemplateError(f"{src}: the folder {path} has no .sql files.")
        return found
    if not path.is_file():
        raise TemplateError(f"{src}: no such file or folder: {path}.")
    return [path]


def module_files(src: Source, base: Path = Path()) -> list[Path]:
    """The project's source files a metadata/callable source runs: its module, the
    packages above it, and the project modules they import, followed transitively.

    A module counts as the project's when it is found under ``base`` (the rootdir) on
    ``sys.path``, outside any virtualenv or ``site-packages``: installed libraries, test
    files the source does not import, and a virtualenv inside the project never count.
    """
    module = src.target.split(":")[0]
    roots = project_roots(base)
    first = _find_module(module, roots)
    if first is None:
        raise TemplateError(
            f"{src}: cannot find module {module!r} in the project ({base}). Is it importable "
            "from the folder pytest runs in (check pythonpath in the pytest configuration)?"
        )
    return imported_project_files(module, roots)


def project_roots(base: Path) -> list[Path]:
    """The folders on sys.path (and the rootdir) that hold the project's own modules."""
    base = base.resolve()
    found: list[Path] = []
    for entry in [str(base), *sys.path]:
        try:
            path = Path(entry or ".").resolve()
        except OSError:
            continue
        if path in found or not path.is_dir():
            continue
        if (path == base or base in path.parents) and not _is_installed(path):
            found.append(path)
    return found


def _is_installed(path: Path) -> bool:
    """Inside a virtualenv or an installation folder: a library's, not the project's."""
    if {"site-packages", "dist-packages", "__pycache__"} & set(path.parts):
        return True
    return any((p / "pyvenv.cfg").is_file() for p in (path, *path.parents))


def _find_module(name: str, roots: Sequence[Path]) -> Path | None:
    parts = name.split(".")
    for root in roots:
        candidate = root.joinpath(*parts)
        for found in (candidate.with_suffix(".py"), candidate / "__init__.py"):
            if found.is_file() and not _is_installed(found.parent):
                return found
    return None


def imported_project_files(module: str, roots: Sequence[Path], limit: int = 5000) -> list[Path]:
    """``module`` and the project modules it imports, transitively (at most ``limit``)."""
    seen: dict[Path, None] = {}
    pending = [module]
    done: set[str] = set()
    while pending and len(seen) < limit:
        name = pending.pop()
        if name in done:
            continue
        done.add(name)
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            path = _find_module(".".join(parts[:i]), roots)
            if path is None or path in seen:
                continue
            seen[path] = None
            package = (
                ".".join(parts[:i]) if path.name == "__init__.py" else ".".join(parts[: i - 1])
            )
            pending.extend(_imports_of(path, package))
    return sorted(seen)


def imported_names(path: Path) -> list[str]:
    """The absolute module names a script (not on ``sys.path``: env.py) imports."""
    return _imports_of(path, "")


def _imports_of(path: Path, package: str) -> list[str]:
    """Absolute names of what ``path`` imports (relative imports resolved from ``package``)."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                prefix = ".".join(anchor)
                base_name = ".".join(x for x in (prefix, node.module or "") if x)
            else:
                base_name = node.module or ""
            if base_name:
                names.append(base_name)
            names.extend(f"{base_name}.{a.name}" if base_name else a.name for a in node.names)
    return names


def extra_inputs(spec: TemplateSpec) -> list[tuple[str, bytes]]:
    """The ``template_inputs`` setting's files (by glob) and environment variables."""
    found: list[tuple[str, bytes]] = []
    for item in spec.inputs:
        if item.startswith("env:"):
            value = os.environ.get(item[4:])
            data = b"unset" if value is None else b"set " + value.encode()
            found.append((item, hashlib.sha256(data).digest()))
            continue
        matches = sorted(p for p in spec.base.glob(item) if p.is_file())
        found.append((f"glob {item}", str(len(matches)).encode()))
        found.extend((str(p.relative_to(spec.base)), p.read_bytes()) for p in matches)
    return found


def coverage(spec: TemplateSpec) -> list[str]:
    """What the template's hash covers, a line per source (for ``--pg-info``)."""
    lines = []
    for role, sources in (("schema", spec.schema), ("seed", spec.seed)):
        for src in sources:
            try:
                names = [name for name, _data in _inputs(spec, src)]
            except TemplateError as exc:
                lines.append(f"{role} {src}: {exc}")
                continue
            shown = ", ".join(names[:8]) + (
                f", ... ({len(names)} in all)" if len(names) > 8 else ""
            )
            lines.append(f"{role} {src}: {shown}")
    if spec.inputs:
        names = [name for name, _data in extra_inputs(spec)]
        lines.append(f"template_inputs: {', '.join(names)}")
    return lines


def _inputs(spec: TemplateSpec, src: Source) -> list[tuple[str, bytes]]:
    """(name, contents) of everything the source's build reads."""
    if src.kind == "alembic":
        return alembic_source.locate(spec.path(src.target), str(src)).inputs()
    if src.kind == "scenario":
        paths = list(_chain(spec, src).files())
    elif src.kind == "sql":
        paths = sql_files(spec, src)
    else:
        paths = module_files(src, spec.base)
        base = spec.base.resolve()
        found = [
            (str(p.relative_to(base)) if base in p.parents else p.name, p.read_bytes())
            for p in paths
        ]
        if src.kind == "flask":
            found.extend(flask_source.migration_files(spec.path(flask_source.DEFAULT_DIR)))
        return found
    return [(p.name, p.read_bytes()) for p in paths]


def fingerprint(spec: TemplateSpec, pg_major: int) -> str:
    """A hash of every input: equal hashes mean an equal template."""
    h = hashlib.sha256()
    h.update(f"pgsandbox {__version__}\npostgresql {pg_major}\nclock {dbclock.VERSION}\n".encode())
    h.update(("extensions " + ",".join(spec.extensions) + "\n").encode())
    if spec.role:
        h.update(f"role {spec.role}\n".encode())
    for role, sources in (("schema", spec.schema), ("seed", spec.seed)):
        for src in sources:
            h.update(f"{role} {src}\n".encode())
            for name, data in _inputs(spec, src):
                h.update(f"file {name} {len(data)}\n".encode())
                h.update(data)
    for name, data in extra_inputs(spec):
        h.update(f"input {name} {len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()


def _chain(spec: TemplateSpec, src: Source) -> scenario.Chain:
    try:
        return scenario.find(spec.scenarios, src.target)
    except ScenarioError as exc:
        raise TemplateError(f"{src}: {exc}") from None


def scenario_fingerprint(base: PgTemplate | None, chain: scenario.Chain, pg_major: int) -> str:
    """The hash of a scenario template: its base template's and the scenario's content."""
    h = hashlib.sha256()
    if base is None:
        h.update(f"pgsandbox {__version__}\npostgresql {pg_major}\n".encode())
        h.update(f"clock {dbclock.VERSION}\n".encode())
    else:
        h.update(f"base {base.fingerprint}\n".encode())
    h.update(f"scenario {chain.name} {chain.content_hash()}\n".encode())
    return h.hexdigest()


# -- building -----------------------------------------------------------------------------


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def ensure_template(
    admin: ConnInfo,
    spec: TemplateSpec,
    pg_major: int,
    run_id: str,
    timeout: float = 60.0,
    url_env: str | None = None,
) -> PgTemplate:
    """The template for ``spec`` on this server: found, or built now (once, under a lock)."""
    fill = filler(spec, run_id, timeout, url_env)
    return _ensure(admin, fingerprint(spec, pg_major), fill, run_id, timeout)


def filler(
    spec: TemplateSpec, run_id: str, timeout: float, url_env: str | None
) -> Callable[[ConnInfo], None]:
    """What builds ``spec`` into a database: the clock, extensions, schema and seed."""

    def fill(info: ConnInfo) -> None:
        with connect(info, autocommit=False, timeout=timeout) as conn:
            if spec.role:
                roles.ensure(conn, spec.role, {"kind": "role", "run": run_id})
            dbclock.install(conn)  # first: defaults written with now() bind to the clock
            _create_extensions(conn, spec.extensions)
            conn.commit()
        from pytest_pgsandbox._engine import appenv

        with appenv.applied(appenv.render(spec.env, info)):
            for src in spec.schema + spec.seed:
                _apply(src, spec, info, timeout, url_env)

    return fill


def ensure_scenario_template(
    admin: ConnInfo,
    base: PgTemplate | None,
    chain: scenario.Chain,
    pg_major: int,
    run_id: str,
    timeout: float = 60.0,
) -> PgTemplate:
    """The template holding scenario ``chain`` on top of ``base``: found, or loaded now.

    Its name carries the hash of the base template and of the scenario's files, so it is
    reused as long as neither changes. A scenario that does not fit raises ScenarioError.
    """
    where = f"template {base.name}" if base else "an empty database (no schema is configured)"

    def fill(info: ConnInfo) -> None:
        with connect(info, autocommit=False, timeout=timeout) as conn:
            scenario.load(conn, chain, where)
            conn.commit()

    return _ensure(
        admin,
        scenario_fingerprint(base, chain, pg_major),
        fill,
        run_id,
        timeout,
        source=base.name if base else None,
        family=f"scenario:{chain.name}",
    )


def ensure_built(
    admin: ConnInfo,
    digest: str,
    fill: Callable[[ConnInfo], None],
    run_id: str,
    timeout: float = 60.0,
    source: str | None = None,
    family: str = "schema",
) -> PgTemplate:
    """A template whose inputs the caller hashed (``digest``) and fills (``fill``): found on
    the server, or built now from ``source`` (template1 when None), once, under a lock.

    ``family``: the templates kept apart when old ones are reaped (one per schema origin).
    """
    return _ensure(admin, digest, fill, run_id, timeout, source=source, family=family)


def _ensure(
    admin: ConnInfo,
    digest: str,
    fill: Callable[[ConnInfo], None],
    run_id: str,
    timeout: float,
    source: str | None = None,
    family: str = "schema",
) -> PgTemplate:
    with connect(admin, timeout=timeout) as conn:
        me = roles.rights(conn)
        if not me.superuser:
            # A role that is no superuser builds a template of its own: it owns the tables
            # in it, and could neither write to nor put back those of another role's.
            digest = hashlib.sha256(f"{digest}\nowner {me.name}".encode()).hexdigest()
        name = PREFIX + digest[:16]
        if _is_ready(conn, name):
            return PgTemplate(name, digest, reused=True)
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{LOCK_SECONDS}s")))
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(name),))
        except errors.LockNotAvailable:
            raise TemplateError(
                f"waited {LOCK_SECONDS} s for another test run to finish building template "
                f"{name} on this server. If none is running, end stale sessions on it."
            ) from None
        try:
            if _is_ready(conn, name):  # another process built it while we waited
                return PgTemplate(name, digest, reused=True)
            began = time.monotonic()
            label: dict[str, object] = {"kind": "template", "hash": digest, "run": run_id}
            if family != "schema":
                label["family"] = family
            with redirects() as redirected:
                _build(conn, admin, name, label, source, fill, timeout, compact=me.superuser)
            built = PgTemplate(
                name, digest, False, time.monotonic() - began, redirected=tuple(redirected)
            )
            reap_old_templates(conn, keep=name, family=family)
            return built
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(name),))


def _is_ready(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute(
        "SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    return bool(row and row[0])


def _build(
    admin_conn: psycopg.Connection[Any],
    admin: ConnInfo,
    name: str,
    label: dict[str, object],
    source: str | None,
    fill: Callable[[ConnInfo], None],
    timeout: float,
    compact: bool = False,
) -> None:
    """Build into ``<name>_building``, then rename it ``name`` and mark it a template.

    ``compact``: rewrite its catalogs afterwards, so that every copy is smaller.
    """
    building = f"{name}_building"
    provision.drop_database(admin_conn, building)  # a build that was interrupted
    provision.create_database(admin_conn, building, {**label, "state": "building"}, source)
    try:
        # Migrations run deep in a session's set-up: see stackroom for why they need room.
        with_room(fill, admin.for_db(building))
        if compact:
            # Only makes copies cheaper: a server that refuses it (a statement_timeout, a lock
            # held elsewhere) still gets its template.
            with (
                contextlib.suppress(psycopg.Error),
                connect(admin.for_db(building), timeout=timeout) as conn,
            ):
                provision.compact_catalogs(conn)
    except BaseException:
        provision.drop_database(admin_conn, building)
        raise
    # A connection the build's code left open (an application's pooled engine) would keep
    # the database from being renamed, and hand a later test the template: end it. The
    # rename waits (5 s) for it to go.
    with contextlib.suppress(psycopg.Error):  # not ours to end: the rename says so
        admin_conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [building],
        )
    admin_conn.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(building), sql.Identifier(name)
        )
    )
    admin_conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(name)))
    admin_conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(provision.make_label(label))
        )
    )


def _create_extensions(conn: psycopg.Connection[Any], names: Sequence[str]) -> None:
    for ext in names:
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext))
                )
        except psycopg.Error as exc:
            available = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM pg_available_extensions ORDER BY name"
                ).fetchall()
            ]
            raise TemplateError(
                f"extension {ext!r} could not be created: {_first_line(exc)}\n"
                f"  available on this server ({len(available)}): {', '.join(available)}\n"
                "  Remove it from --pg-extensions / pg_extensions, or use PostgreSQL binaries "
                "that ship it (--pg-bin-dir)."
            ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _apply(
    src: Source, spec: TemplateSpec, info: ConnInfo, timeout: float, env: str | None
) -> None:
    if src.kind == "sql":
        for path in sql_files(spec, src):
            _run_sql_file(src, path, info, timeout)
    elif src.kind == "alembic":
        _run_alembic(src, spec, info, env)
    elif src.kind in ("metadata", "callable"):
        with only_to(info) as guard:
            try:
                if src.kind == "metadata":
                    _run_metadata(src, info)
                else:
                    _run_callable(src, info, timeout)
            except TemplateError:
                if guard.refused is not None:
                    raise TemplateError(f"{src}: {guard.refused}") from None
                raise
        if guard.refused is not None:  # the user's code caught the refusal
            raise TemplateError(f"{src}: {guard.refused}")
    elif src.kind == "flask":
        with _url_in_env(env, info):
            flask_source.upgrade(
                str(src),
                lambda: _import(src),
                info,
                sqlalchemy_url(info),
                spec.base,
                lambda folder: _hashed_folder(spec, folder),
            )
    elif src.kind == "scenario":
        chain = _chain(spec, src)
        with connect(info, autocommit=False, timeout=timeout) as conn:
            try:
                scenario.load(conn, chain, "the template being built (schema, then seed)")
            except ScenarioError as exc:
                raise TemplateError(f"{src}: {exc}") from None
            conn.commit()
    else:  # pragma: no cover - settings validate the kind
        raise TemplateError(f"unknown source kind in {src}")


def _hashed_folder(spec: TemplateSpec, folder: Path) -> bool:
    """Whether the template's hash covers every file of ``folder``: it is the default
    migrations folder, or template_inputs globs name all its files."""
    folder = folder.resolve()
    if folder == spec.path(flask_source.DEFAULT_DIR).resolve():
        return True
    covered = {
        (spec.base / name).resolve()
        for name, _data in extra_inputs(spec)
        if not name.startswith(("env:", "glob "))
    }
    files = [p.resolve() for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return bool(files) and all(p in covered for p in files if p.suffix != ".pyc")


def _run_sql_file(src: Source, path: Path, info: ConnInfo, timeout: float) -> None:
    text = path.read_text()
    with connect(info, autocommit=False, timeout=timeout) as conn:
        try:
            conn.execute(text.encode())  # no parameters: % signs are left alone
            conn.commit()
        except psycopg.Error as exc:
            where = ""
            position = exc.diag.statement_position
            if position and position.isdigit():
                line = text.encode()[: int(position)].decode(errors="replace").count("\n") + 1
                where = f" line {line}"
            raise TemplateError(
                f"{src}: {path}{where}: {_first_line(exc)}"
                + (f"\n  {exc.diag.message_detail}" if exc.diag.message_detail else "")
            ) from None


def sqlalchemy_url(info: ConnInfo) -> str:
    return info.url().replace("postgresql://", "postgresql+psycopg://", 1)


def _import(src: Source) -> Any:
    module_name, _, attr = src.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise TemplateError(
            f"{src}: importing {module_name} failed: {type(exc).__name__}: {exc}"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise TemplateError(f"{src}: module {module_name} has no attribute {attr!r}.") from None


def _run_metadata(src: Source, info: ConnInfo) -> None:
    try:
        import sqlalchemy
    except ImportError:
        raise TemplateError(
            f"{src} needs SQLAlchemy: pip install 'pytest-pgsandbox[sqlalchemy]'"
        ) from None
    metadata = _import(src)
    metadata = getattr(metadata, "metadata", metadata)
    if not isinstance(metadata, sqlalchemy.MetaData):
        raise TemplateError(
            f"{src} is a {type(metadata).__name__}, not a SQLAlchemy MetaData (or a "
            "declarative base with .metadata)."
        )
    engine = sqlalchemy.create_engine(sqlalchemy_url(info), poolclass=sqlalchemy.NullPool)
    try:
        metadata.create_all(engine)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise TemplateError(f"{src}: create_all failed: {_first_line(exc)}") from None
    finally:
        engine.dispose()


def _run_callable(src: Source, info: ConnInfo, timeout: float) -> None:
    """Call ``FUNC(conn)``: a psycopg connection in a transaction, committed afterwards.

    A function with a ``url`` parameter gets the database's URL as ``url=`` too (alone, when
    it has no other parameter), for code that makes its own connections; one that takes no
    argument is called as ``FUNC()`` (an application's own seed, on its own engine).
    """
    func = _import(src)
    if not callable(func):
        raise TemplateError(f"{src} is not callable.")
    try:
        required = [
            p.name
            for p in inspect.signature(func).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        names = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        required, names = ["conn"], []
    with connect(info, autocommit=False, timeout=timeout) as conn:
        try:
            if names == ["url"]:
                func(url=info.url())
            elif not required and "url" not in names:
                # The application's own seeding function (its settings name the database:
                # the env setting's, which goes to the template while it is built).
                func()
            elif "url" in names:
                func(conn, url=info.url())
            else:
                func(conn)
            conn.commit()
        except (Exception, SystemExit) as exc:
            raise TemplateError(f"{src} {alembic_source.what(exc)}\n{_user_frames(exc)}") from None


def _user_frames(exc: BaseException, limit: int = 3) -> str:
    """The last frames of a traceback that are not ours or a library's."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "site-packages" not in f.filename and "pytest_pgsandbox" not in f.filename
    ][-limit:]
    return "\n".join(f"  at {f.filename}:{f.lineno} in {f.name}" for f in frames)


@contextlib.contextmanager
def _url_in_env(url_env: str | None, info: ConnInfo) -> Iterator[None]:
    """While inside, ``url_env`` holds the template's URL: an env.py or an app that reads
    its URL from there gets ours."""
    saved = os.environ.get(url_env) if url_env else None
    if url_env:
        os.environ[url_env] = info.url()
    try:
        yield
    finally:
        if url_env:
            if saved is None:
                os.environ.pop(url_env, None)
            else:
                os.environ[url_env] = saved


def _run_alembic(src: Source, spec: TemplateSpec, info: ConnInfo, url_env: str | None) -> None:
    files = alembic_source.locate(spec.path(src.target), str(src))
    with _url_in_env(url_env, info):
        alembic_source.upgrade(files, str(src), info, sqlalchemy_url(info))


# -- clean-up -----------------------------------------------------------------------------


def templates(conn: psycopg.Connection[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, label in provision.labelled_databases(conn):
        if label.get("kind") == "template":
            yield name, label


def reap_old_templates(
    conn: psycopg.Connection[Any], keep: str, count: int = KEEP_OLD, family: str = "schema"
) -> list[str]:
    """Drop our templates of ``family`` (the schema's, or one scenario's) but ``keep`` and
    the ``count`` newest others. Returns the names."""
    others = sorted(
        (t for t in templates(conn) if t[0] != keep and t[1].get("family", "schema") == family),
        key=lambda t: float(t[1].get("created", 0)),
        reverse=True,
    )
    dropped = []
    for name, _label in others[count:]:
        try:
            provision.drop_database(conn, name)
            dropped.append(name)
        except psycopg.Error:
            continue  # in use by another run right now: next time
    return dropped
