"""The migration checks, run once per template hash: a file per hash in the cache folder.

``<cache>/migrations/<hash>.json`` holds, per check, its last result and the run that found
it. A check that *passed* for a hash is not run again for it, by any later run, on any
server: the hash covers every input of the history (the template's), so the same hash means
the same migrations. A failure is kept only for the run that found it (the other xdist workers
of that run read it instead of walking again); the next run checks again.

The file is read and written under a lock of its own: xdist workers of one run (and runs side
by side) walk a history once; the others wait for the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_pgsandbox._engine.naming import database_name
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.templates import alembic_source
from pytest_pgsandbox._engine.templates import migrations
from pytest_pgsandbox._engine.templates import template
from pytest_pgsandbox._engine.templates.migrations import CHECKS
from pytest_pgsandbox._engine.templates.migrations import Outcome
from pytest_pgsandbox._engine.templates.revision_data import RevisionData
from pytest_pgsandbox._engine.templates.template import Source
from pytest_pgsandbox._engine.templates.template import TemplateSpec
from pytest_pgsandbox._engine.templates.template import filler
from pytest_pgsandbox._engine.templates.template import sqlalchemy_url
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import TemplateError

FORMAT = 1


@dataclass(frozen=True)
class Result:
    """A check's outcome as a session reports it: ``cached`` when an earlier run found it."""

    outcome: Outcome
    fingerprint: str
    cached: bool = False

    @property
    def short(self) -> str:
        return self.fingerprint[:12]


def entry(cache: Path, fingerprint: str) -> Path:
    return cache / "migrations" / f"{fingerprint[:32]}.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return {}
    checks = data.get("checks")
    return checks if isinstance(checks, dict) else {}


def _write(path: Path, fingerprint: str, checks: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = path.with_suffix(".tmp")
    text = json.dumps({"format": FORMAT, "fingerprint": fingerprint, "checks": checks}, indent=1)
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)


def _known(
    checks: dict[str, Any],
    wanted: Sequence[str],
    fingerprint: str,
    run_id: str,
    keys: Mapping[str, str],
) -> dict[str, Result]:
    found = {}
    for name in wanted:
        item = checks.get(name)
        if not isinstance(item, dict) or item.get("key", "") != keys.get(name, ""):
            continue
        if name == "models_match" and not _same_files(item):
            continue
        outcome = Outcome(
            name,
            str(item.get("status")),
            str(item.get("message", "")),
            float(item.get("seconds", 0.0)),
        )
        same_run = item.get("run") == run_id
        if outcome.status == "passed" or same_run:
            found[name] = Result(outcome, fingerprint, cached=not same_run)
    return found


def run_checks(
    admin: ConnInfo,
    spec: TemplateSpec,
    src: Source,
    fingerprint: str,
    wanted: Sequence[str],
    cache: Path,
    run_id: str,
    worker: str,
    timeout: float,
    start_timeout: float,
    url_env: str | None = None,
    data: RevisionData | None = None,
    models: str | None = None,
) -> dict[str, Result]:
    """The ``wanted`` checks of the Alembic source ``src`` of ``spec``, whose template has
    the hash ``fingerprint``: from the cache, or run now (once, under the cache's lock).

    Besides the hash, a check's result holds for what else it read: the walk's checks for
    the ``data`` spec, ``models_match`` for the files of the models (``models``, or the
    project modules env.py imports)."""
    from filelock import FileLock
    from filelock import Timeout

    wanted = [c for c in CHECKS if c in wanted]
    keys = _keys(spec, src, wanted, data, models)
    path = entry(cache, fingerprint)
    found = _known(_read(path), wanted, fingerprint, run_id, keys)  # written by a rename
    if len(found) == len(wanted):
        return found
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = FileLock(str(path.with_suffix(".lock")))
    try:
        lock.acquire(timeout=timeout + 60)
    except Timeout:
        raise TemplateError(
            f"{src}: waited {timeout + 60:.0f} s for another process checking the same "
            f"migrations (lock {path.with_suffix('.lock')}). If none runs, delete that file."
        ) from None
    try:
        checks = _read(path)
        found = _known(checks, wanted, fingerprint, run_id, keys)
        todo = [c for c in wanted if c not in found]
        if not todo:
            return found
        fresh = _run(
            admin, spec, src, todo, run_id, worker, timeout, start_timeout, url_env, data, models
        )
        for name, outcome in fresh.items():
            checks[name] = {
                **dataclasses.asdict(outcome),
                "run": run_id,
                "at": time.time(),
                "key": keys.get(name, ""),
            }
            if name == "models_match":
                files = models_files(spec, src, models)
                checks[name].update(files=files, files_hash=_hash_files(files))
            found[name] = Result(outcome, fingerprint)
        _write(path, fingerprint, checks)
        return found
    finally:
        lock.release()


def _run(
    admin: ConnInfo,
    spec: TemplateSpec,
    src: Source,
    todo: Sequence[str],
    run_id: str,
    worker: str,
    timeout: float,
    start_timeout: float,
    url_env: str | None,
    data: RevisionData | None,
    models: str | None,
) -> dict[str, Outcome]:
    shown = str(src)
    files = alembic_source.locate(spec.path(src.target), shown)
    found: dict[str, Outcome] = {}
    if "single_head" in todo:
        found["single_head"] = migrations.heads_outcome(files, shown)
    walked = [c for c in todo if c in migrations.WALKED]
    if not walked:
        return found
    deadline = time.monotonic() + timeout
    name = database_name("migrations", run_id, worker)
    info = base_database(admin, spec, src, name, run_id, worker, start_timeout, url_env)
    try:
        found.update(
            migrations.walk(
                files,
                shown,
                info,
                sqlalchemy_url(info),
                walked,
                deadline,
                url_env,
                data,
                models,
                timeout,
            )
        )
    finally:
        drop(admin, name, start_timeout)
    return found


def _keys(
    spec: TemplateSpec,
    src: Source,
    wanted: Sequence[str],
    data: RevisionData | None,
    models: str | None,
) -> dict[str, str]:
    """What each check read besides the template's inputs ("" for nothing): cheap to
    compute, so that a cached run stays a file read."""
    keys = {}
    if data:
        digest = data.digest()
        keys.update(dict.fromkeys(("upgrade", "up_down", "downgrade_leaves_no_trace"), digest))
    if "models_match" in wanted:  # and the models' files: see _same_files
        keys["models_match"] = f"models {models or 'target_metadata'}"
    return keys


def models_files(spec: TemplateSpec, src: Source, models: str | None) -> list[str]:
    """The models' files: those of ``models`` (MODULE:ATTR) and the project modules it
    imports, or, for env.py's target_metadata, the project modules env.py imports."""
    roots = template.project_roots(spec.base)
    if models:
        names = [models.removeprefix("metadata:").partition(":")[0]]
    else:
        files = alembic_source.locate(spec.path(src.target), str(src))
        names = template.imported_names(files.scripts / "env.py")
    found: dict[str, None] = {}
    for name in names:
        found.update((str(p), None) for p in template.imported_project_files(name, roots))
    return list(found)


def _hash_files(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for name in paths:
        try:
            data = Path(name).read_bytes()
        except OSError:
            h.update(f"missing {name}\n".encode())
            continue
        h.update(f"file {name} {len(data)}\n".encode() + data)
    return h.hexdigest()


def _same_files(item: dict[str, Any]) -> bool:
    """Whether the models' files a result was found with are unchanged (a new import can
    only come with a change to one of them, or to env.py, which the hash covers)."""
    files = item.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return False
    return _hash_files(files) == item.get("files_hash")


def base_database(
    admin: ConnInfo,
    spec: TemplateSpec,
    src: Source,
    name: str,
    run_id: str,
    worker: str,
    timeout: float,
    url_env: str | None,
) -> ConnInfo:
    """A new database ``name``, made as the template is up to the Alembic source ``src``
    (the clock, extensions, a role, the schema sources before it): the history's base."""
    before = spec.schema[: spec.schema.index(src)]
    base = dataclasses.replace(spec, schema=before, seed=())
    label = {"kind": "migrations", "run": run_id, "worker": worker}
    with connect(admin, timeout=timeout) as conn:
        provision.drop_database(conn, name)  # one left by an interrupted run (ours alone)
        provision.create_database(conn, name, label, None)
    info = admin.for_db(name)
    try:
        filler(base, run_id, timeout, url_env)(info)
    except BaseException:
        drop(admin, name, timeout)
        raise
    return info


def drop(admin: ConnInfo, name: str, timeout: float) -> None:
    """Drop the database ``name`` (made by :func:`base_database`); a failure leaves it to
    ``pgsandbox gc``."""
    with contextlib.suppress(Exception), connect(admin, timeout=timeout) as conn:
        provision.drop_database(conn, name)
