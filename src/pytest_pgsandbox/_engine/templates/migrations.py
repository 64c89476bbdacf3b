"""The checks of an Alembic history: one head, up, down and back, no trace, models match.

All of them come from one walk, in a database of its own (made like the template up to the
Alembic source: clock, extensions, earlier sources), through the project's ``env.py`` run
once, so on one connection, with one ``ScriptDirectory``:

1. up, one revision at a time, from base to the heads; the catalog (:func:`.catalog.objects`)
   is read before each step when the no-trace check is wanted;
2. at the heads, Alembic's autogenerate comparison of ``env.py``'s ``target_metadata`` with
   the database (``models_match``);
3. down, one revision at a time, in the exact reverse order; after undoing a revision the
   catalog must be what it was before that revision was applied (``no_trace``; a
   difference is named at the revision that first left it);
4. back up to the heads in one go (``up_down``), unless a downgrade left a trace (the
   upgrade would then fail for that reason, which ``no_trace`` already reports).

``env.py`` gets what ``alembic upgrade`` gives it; the walk is the work function Alembic's
commands hand to it (the steps are yielded one by one, the catalog is read between them on
the migration context's own connection). Every statement and the walk as a whole are bounded
by ``deadline``.

Results go through :mod:`.migration_cache`: a check that passed for a template's hash is not
run again for it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from pytest_pgsandbox._engine.templates.alembic_source import AlembicFiles
from pytest_pgsandbox._engine.templates.alembic_source import _config
from pytest_pgsandbox._engine.templates.alembic_source import logging_left_alone
from pytest_pgsandbox._engine.templates.alembic_source import what
from pytest_pgsandbox._engine.templates.catalog import objects
from pytest_pgsandbox._engine.templates.guard import only_to
from pytest_pgsandbox._engine.templates.revision_data import WHEN
from pytest_pgsandbox._engine.templates.revision_data import RevisionData
from pytest_pgsandbox._engine.templates.revision_data import apply
from pytest_pgsandbox._engine.templates.revision_data import where
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox.errors import TemplateError

CHECKS = ("single_head", "upgrade", "up_down", "downgrade_leaves_no_trace", "models_match")
WALKED = frozenset(CHECKS[1:])  # the checks that need the walk (a database)
# Catalog entries a downgrade may change without leaving a trace: a sequence's position
# (data migrations advance sequences that rollback of rows does not wind back).
_NOT_COMPARED = ("sequence position ",)


@dataclass(frozen=True)
class Outcome:
    """One check's result: ``status`` is passed, failed or skipped."""

    check: str
    status: str
    message: str = ""
    seconds: float = 0.0


class _Stop(Exception):
    """The walk ends here (the reason is in the walk's results)."""


class WalkDeadline(Exception):
    """The walk took longer than its deadline."""


def heads_outcome(files: AlembicFiles, shown: str) -> Outcome:
    """``single_head``: the history has one head (no database needed)."""
    from alembic.script import ScriptDirectory

    began = time.monotonic()
    script = ScriptDirectory.from_config(_config(files, None, None))
    heads = script.get_heads()
    took = time.monotonic() - began
    if len(heads) <= 1:
        return Outcome("single_head", "passed", f"head {heads[0] if heads else '(none)'}", took)
    lines = [f"{shown}: the history has {len(heads)} heads, where one is expected:"]
    for head in sorted(heads):
        rev: Any = script.get_revision(head)
        where = os.path.relpath(rev.path) if rev is not None and rev.path else "?"
        doc = f" ({rev.doc})" if rev is not None and rev.doc else ""
        lines.append(f"  {head}{doc} in {where}, after {_down(rev)}")
    lines.append(
        "Two branches were made from one revision (often two pull requests merged one after "
        'the other). Join them with a merge revision: alembic merge -m "merge heads" heads'
        " (or alembic merge " + " ".join(sorted(heads)) + "), then check its upgrade."
    )
    return Outcome("single_head", "failed", "\n".join(lines), took)


def _down(rev: Any) -> str:
    down = getattr(rev, "down_revision", None)
    if not down:
        return "base"
    return ", ".join(down) if isinstance(down, (tuple, list)) else str(down)


@dataclass
class _Walk:
    """The state of one walk: what is wanted, what was found, where it is now."""

    script: Any
    wanted: frozenset[str]
    deadline: float
    shown: str
    data: RevisionData = field(default_factory=RevisionData)
    models: Models | None = None
    results: dict[str, Outcome] = field(default_factory=dict)
    step: str = ""  # what runs now, e.g. "the downgrade of 0003 (add email)"
    owner: str = "upgrade"  # the check that fails if it does
    limit: float = 0.0  # migrations_timeout, for the deadline's message
    traces: list[str] = field(default_factory=list)
    failed_down: str | None = None
    began: float = field(default_factory=time.monotonic)

    def name(self, rev: Any) -> str:
        doc = f" ({rev.doc})" if getattr(rev, "doc", None) else ""
        where = f" in {os.path.relpath(rev.path)}" if getattr(rev, "path", None) else ""
        return f"{rev.revision}{doc}{where}"

    def done(self, check: str, status: str, message: str = "") -> None:
        if check in self.wanted and check not in self.results:
            self.results[check] = Outcome(check, status, message, time.monotonic() - self.began)

    def tick(self, step: str) -> None:
        """``step`` comes next, unless the deadline has passed."""
        self.step = step
        if time.monotonic() > self.deadline:
            raise WalkDeadline

    def put(self, context: Any, key: str, rev: Any) -> None:
        """The data spec's items for ``rev`` (key ``before_revision_data`` or
        ``at_revision_data``), on the walk's connection."""
        items = (self.data.before if key == "before_revision_data" else self.data.at).get(
            rev.revision, ()
        )
        for item in items:
            self.step = f"{where(item)} of {self.data.origin} {WHEN[key]} {self.name(rev)}"
            apply(context.connection, (item,))

    def plan(self, _heads: Any, context: Any) -> Iterator[Any]:
        """Alembic's work function: the steps of the whole walk, checks between them."""
        from alembic.runtime.migration import MigrationStep

        cursor = context.connection.connection.cursor()
        left = max(1, int((self.deadline - time.monotonic()) * 1000))
        cursor.execute(f"SET statement_timeout = {left}")
        order = list(reversed(list(self.script.walk_revisions("base", "heads"))))
        revmap = self.script.revision_map
        pictures = "downgrade_leaves_no_trace" in self.wanted
        before: list[dict[str, str]] = []
        for rev in order:
            self.tick(f"the upgrade of {self.name(rev)}")
            self.put(context, "before_revision_data", rev)
            if pictures:
                before.append(_catalog(cursor))
            self.step = f"the upgrade of {self.name(rev)}"
            yield MigrationStep.upgrade_from_script(revmap, rev)
            self.put(context, "at_revision_data", rev)
        self.step = ""
        rows = f", with the data of {self.data.origin}" if self.data else ""
        self.done("upgrade", "passed", f"{len(order)} revisions, base to head{rows}")
        if "models_match" in self.wanted and "models_match" not in self.results:
            self.step, self.owner = (
                "the comparison of the models with the database at the head",
                "models_match",
            )
            with _without_clock(cursor):
                self.results["models_match"] = _compare_models(
                    context, self.shown, self.began, self.models
                )
            self.step = ""
        self.owner = "up_down"
        if not self.wanted & {"up_down", "downgrade_leaves_no_trace"}:
            return
        after_previous: dict[str, str] = _catalog(cursor) if pictures else {}
        _new_command(context)
        for index in range(len(order) - 1, -1, -1):
            rev = order[index]
            self.tick(f"the downgrade of {self.name(rev)}")
            yield MigrationStep.downgrade_from_script(revmap, rev)
            if pictures:
                now = _catalog(cursor)
                # What differs now and did not already differ the same way before this
                # downgrade: the trace this revision left.
                old = _diff(before[index + 1], after_previous) if index + 1 < len(order) else {}
                new = _diff(before[index], now)
                left_here = [line for key, line in sorted(new.items()) if old.get(key) != line]
                if left_here:
                    self.traces.append(
                        f"after the downgrade of {self.name(rev)}:\n"
                        + "\n".join(f"  {line}" for line in left_here)
                    )
                after_previous = now
        self.step = ""
        if self.traces:
            self.done(
                "downgrade_leaves_no_trace",
                "failed",
                f"{self.shown}: downgrades left objects that were not there before the "
                "upgrade they undo (+ left behind, - missing, ~ changed):\n"
                + "\n".join(self.traces),
            )
            self.done(
                "up_down",
                "passed",
                f"every downgrade of {len(order)} ran; not walked back up, since downgrades "
                "left traces (see downgrade_leaves_no_trace)",
            )
            return
        self.done("downgrade_leaves_no_trace", "passed", f"{len(order)} downgrades compared")
        _new_command(context)
        for rev in order:
            self.tick(f"the upgrade of {self.name(rev)}, after the walk down to base")
            yield MigrationStep.upgrade_from_script(revmap, rev)
        self.step = ""
        self.done("up_down", "passed", f"{len(order)} revisions down to base and back up")


def _new_command(context: Any) -> None:
    """From here on, as in a new Alembic command: the types SQLAlchemy remembers having
    created (an Enum of a create_table) are forgotten, so that they are created again."""
    memo = getattr(context.impl, "memo", None)
    if isinstance(memo, dict):
        memo.clear()


@contextlib.contextmanager
def _without_clock(cursor: Any) -> Iterator[None]:
    """pgsandbox's clock schema off the search_path: its objects are not the models'."""
    from pytest_pgsandbox._engine.clock.dbclock import SCHEMA

    cursor.execute("SELECT current_setting('search_path')")
    (saved,) = cursor.fetchone()
    kept = ", ".join(p.strip() for p in str(saved).split(",") if p.strip() != SCHEMA)
    cursor.execute("SELECT set_config('search_path', %s, false)", (kept,))
    try:
        yield
    finally:
        cursor.execute("SELECT set_config('search_path', %s, false)", (saved,))


def _catalog(cursor: Any) -> dict[str, str]:
    return {k: v for k, v in objects(cursor).items() if not k.startswith(_NOT_COMPARED)}


def _diff(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """Each object that differs, as a line: ``+`` only after, ``-`` only before, ``~``."""
    lines = {}
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if old is None:
            lines[key] = f"+ {key}: {new}"
        elif new is None:
            lines[key] = f"- {key}: {old}"
        else:
            lines[key] = f"~ {key}: {new} (before the upgrade: {old})"
    return lines


@dataclass(frozen=True)
class Models:
    """The models ``models_match`` compares with, from the ``migrations_models`` setting."""

    target: str  # MODULE:ATTR, ATTR possibly dotted (Base.metadata)
    metadata: Any = None  # a MetaData or a list of them, once imported


def load_models(target: str) -> Models:
    """Import ``MODULE:ATTR`` (a ``MetaData``, a declarative base or anything with
    ``.metadata``, or a list of MetaData); an error says what was found instead."""
    import importlib

    import sqlalchemy as sa

    shown = f"migrations_models = {target}"
    module_name, _, attr = target.removeprefix("metadata:").partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except Exception as exc:
        raise ModelsError(
            f"{shown}: importing it {what(exc)}. Give MODULE:ATTR of the models' MetaData, "
            "e.g. myapp.models:Base.metadata, importable from where pytest runs."
        ) from None
    found = getattr(found, "metadata", found)
    many = found if isinstance(found, (list, tuple)) else [found]
    if not many or not all(isinstance(m, sa.MetaData) for m in many):
        raise ModelsError(
            f"{shown} is a {type(found).__name__}, not a SQLAlchemy MetaData (or a declarative "
            "base with .metadata, or a list of MetaData)."
        )
    return Models(target, found)


class ModelsError(Exception):
    """The migrations_models setting names nothing usable."""


def _compare_models(context: Any, shown: str, began: float, models: Models | None) -> Outcome:
    from alembic.autogenerate import compare_metadata

    metadata = models.metadata if models is not None else context.opts.get("target_metadata")
    origin = f"migrations_models = {models.target}" if models else "target_metadata of env.py"
    if metadata is None:
        return Outcome(
            "models_match",
            "skipped",
            f"{shown}: env.py passes no target_metadata to context.configure(), so there are "
            "no models to compare with (set target_metadata = Base.metadata there, or the "
            "migrations_models setting to MODULE:ATTR of the models' MetaData).",
            time.monotonic() - began,
        )
    diffs = compare_metadata(context, metadata)
    took = time.monotonic() - began
    if not diffs:
        return Outcome("models_match", "passed", "no differences", took)
    lines = [_render(d) for d in diffs]
    return Outcome(
        "models_match",
        "failed",
        f"{shown}: the models ({origin}) differ from the database the "
        f"migrations build, at the head; alembic revision --autogenerate would write "
        f"{len(lines)} operation{'s' if len(lines) > 1 else ''}:\n"
        + "\n".join(f"  {line}" for line in lines),
        took,
    )


def _render(diff: Any) -> str:
    """One autogenerate difference in words (the model is what the code says)."""
    if isinstance(diff, list):  # modify_* come as lists of one or more tuples
        return "; ".join(_render(d) for d in diff)
    op = diff[0]
    if op in ("add_table", "remove_table"):
        table = diff[1]
        where = (
            "in the models, not made by the migrations"
            if op == "add_table"
            else ("made by the migrations, not in the models")
        )
        return f"table {table.fullname}: {where}"
    if op in ("add_column", "remove_column"):
        _, schema, table, column = diff
        name = f"{schema + '.' if schema else ''}{table}.{column.name}"
        where = (
            "in the models, not made by the migrations"
            if op == "add_column"
            else ("made by the migrations, not in the models")
        )
        return f"column {name} ({column.type}): {where}"
    if op in ("add_index", "remove_index", "add_constraint", "remove_constraint"):
        obj = diff[1]
        kind = "index" if "index" in op else "constraint"
        table = getattr(getattr(obj, "table", None), "fullname", "?")
        cols = ", ".join(c.name for c in getattr(obj, "columns", ()))
        where = (
            "in the models, not made by the migrations"
            if op.startswith("add")
            else ("made by the migrations, not in the models")
        )
        return f"{kind} {obj.name or '(unnamed)'} on {table} ({cols}): {where}"
    if op.startswith("modify_"):
        _, schema, table, column, _info, db_value, model_value = diff
        name = f"{schema + '.' if schema else ''}{table}.{column}"
        what_ = op.removeprefix("modify_")
        return (
            f"column {name}: {what_} is {db_value!r} in the database, {model_value!r} in the models"
        )
    return repr(diff)


def walk(
    files: AlembicFiles,
    shown: str,
    info: ConnInfo,
    url: str,
    wanted: Sequence[str],
    deadline: float,
    url_env: str | None = None,
    data: RevisionData | None = None,
    models: str | None = None,
    timeout: float | None = None,
) -> dict[str, Outcome]:
    """Run the walk's ``wanted`` checks on the (new, empty but for the base) database of
    ``info``; ``url`` is its SQLAlchemy URL. ``data`` is put in around its revisions on the
    way up; ``models`` (MODULE:ATTR) replaces env.py's target_metadata. Returns an Outcome
    per wanted check."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    config = _config(files, None, None)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    script = ScriptDirectory.from_config(config)
    state = _Walk(script, frozenset(wanted) & WALKED, deadline, shown)
    state.limit = timeout or deadline - state.began
    if not state.wanted:
        return {}
    error: str | None = None
    with only_to(info) as guard, logging_left_alone(), _env_url(url_env, info):
        try:
            state.data = data.resolved(script, shown) if data else RevisionData()
        except TemplateError as exc:
            return _stopped(state, "upgrade", str(exc))
        if models and "models_match" in state.wanted:
            try:
                state.models = load_models(models)
            except ModelsError as exc:
                state.done("models_match", "failed", f"{shown}: {exc}")
        try:
            with EnvironmentContext(config, script, fn=state.plan, destination_rev="heads"):
                script.run_env()
        except WalkDeadline:
            error = _late(state, "before")
        except (Exception, SystemExit) as exc:
            if _cancelled(exc) and time.monotonic() >= state.deadline - 0.5:
                return _stopped(state, state.owner, _late(state, "in"))
            text = what(exc).removeprefix("raised ")
            if guard.refused is not None:
                text = str(guard.refused)
            error = f"{shown}: {state.step or 'env.py'} failed: {text}"
    if error is not None:
        if state.data and state.owner != "models_match":
            error += f"\n(The walk had put in the data of {state.data.origin} on its way up.)"
        return _stopped(state, state.owner, error)
    return _results(state)


def _late(state: _Walk, when: str) -> str:
    """The deadline's message: where the walk was, how long it may take, what to do."""
    now = time.monotonic()
    return (
        f"{state.shown}: the walk through the history stopped at its deadline "
        f"(migrations_timeout = {state.limit:g} s), "
        f"{now - state.began:.1f} s after it began, {when} {state.step or 'its next step'}. "
        "Raise migrations_timeout if the history is that slow, or look for a migration that "
        "waits on a lock or on a long statement."
    )


def _cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is (or wraps) PostgreSQL's statement timeout (SQLSTATE 57014)."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) == "57014":
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def _stopped(state: _Walk, owner: str, error: str) -> dict[str, Outcome]:
    """The check the failing step belongs to fails; those after it could not run."""
    state.done(owner, "failed", error)
    if "upgrade" not in state.results:
        state.done("upgrade", "failed", error)
    reason = {
        "upgrade": "the upgrade failed (see upgrade)",
        "up_down": "a downgrade failed (see up_down)",
        "models_match": "the models comparison failed (see models_match)",
    }[owner]
    for check in sorted(state.wanted - state.results.keys()):
        if check == "downgrade_leaves_no_trace" and state.traces:
            state.done(check, "failed", "\n".join(state.traces))
        else:
            state.done(check, "skipped", f"not checked: {reason}")
    return _results(state)


def _results(state: _Walk) -> dict[str, Outcome]:
    took = time.monotonic() - state.began
    return {
        k: Outcome(v.check, v.status, v.message, v.seconds or took)
        for k, v in state.results.items()
    }


@contextlib.contextmanager
def _env_url(name: str | None, info: ConnInfo) -> Iterator[None]:
    """``name`` holds the walk database's URL meanwhile (for env.py files that read it)."""
    if not name:
        yield
        return
    saved = os.environ.get(name)
    os.environ[name] = info.url()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved
