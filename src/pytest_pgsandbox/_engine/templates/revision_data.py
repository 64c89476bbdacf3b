"""Rows put in around revisions while a history is walked (``before_revision_data`` and
``at_revision_data``, in pytest-alembic's shape).

A spec maps a revision to what happens around its upgrade::

    {
        "before_revision_data": {"0002": [{"__tablename__": "users", "name": "Alice Chen"}]},
        "at_revision_data": {"0002": check_emails},
    }

``before_revision_data[REV]`` runs right before REV is upgraded to, ``at_revision_data[REV]``
right after. A value is a row (a dict whose ``__tablename__``, and optional ``__schema__``,
name its table; the other keys are its columns), a callable given the walk's SQLAlchemy
``Connection`` (to insert what rows cannot say, or to assert on what the migration made),
or a list of those. Rows are inserted through the table as it is at that point of the
history (reflected), so column types convert values as they would for the application.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

from pytest_pgsandbox.errors import TemplateError

if TYPE_CHECKING:
    from typing import TypeAlias

    Item: TypeAlias = dict[str, Any] | Callable[[Any], object]

KEYS = ("before_revision_data", "at_revision_data")
WHEN = {"before_revision_data": "before the upgrade of", "at_revision_data": "after the upgrade of"}


@dataclass(frozen=True)
class RevisionData:
    """What to do around each revision: ``before[rev]`` and ``at[rev]``, in order."""

    before: Mapping[str, tuple[Item, ...]] = field(default_factory=dict)
    at: Mapping[str, tuple[Item, ...]] = field(default_factory=dict)
    origin: str = "pytest_pgsandbox_migration_data"

    def __bool__(self) -> bool:
        return bool(self.before or self.at)

    def revisions(self) -> set[str]:
        return set(self.before) | set(self.at)

    def digest(self) -> str:
        """A hash of the rows and of each callable's source: a changed spec walks again."""
        h = hashlib.sha256()
        for key, table in (("before", self.before), ("at", self.at)):
            for rev in sorted(table):
                h.update(f"{key} {rev}\n".encode())
                for item in table[rev]:
                    h.update(_describe(item).encode() + b"\n")
        return h.hexdigest()

    def resolved(self, script: Any, shown: str) -> RevisionData:
        """The same spec with each revision as the history spells it (partial ids, ``head``
        allowed); a revision the history does not have is an error naming it."""

        def full(rev: str) -> str:
            try:
                found = script.get_revision(rev)
            except Exception as exc:  # alembic's CommandError / ResolutionError
                found, why = None, f": {exc}"
            else:
                why = ""
            if found is None:
                raise TemplateError(
                    f"{shown}: {self.origin} names revision {rev!r}, which is not in the "
                    f"history{why}. Use a revision id of its files (alembic history lists them)."
                )
            return str(found.revision)

        return RevisionData(
            {full(r): v for r, v in self.before.items()},
            {full(r): v for r, v in self.at.items()},
            self.origin,
        )


def _describe(item: Item) -> str:
    if callable(item):
        try:
            text = inspect.getsource(item)
        except (OSError, TypeError):
            code = getattr(item, "__code__", None)
            text = repr(code.co_code) if code is not None else repr(item)
        name = f"{getattr(item, '__module__', '?')}.{getattr(item, '__qualname__', '?')}"
        return f"callable {name}\n{text}"
    return "row " + json.dumps(item, sort_keys=True, default=repr)


def parse(raw: object, origin: str = "pytest_pgsandbox_migration_data") -> RevisionData:
    """A :class:`RevisionData` from what the project returned, or an error saying what is
    wrong with it and what shape is expected."""
    if raw is None:
        return RevisionData(origin=origin)
    shape = (
        "Return a dict with before_revision_data and/or at_revision_data, each mapping a "
        'revision id to a row ({"__tablename__": "users", "name": "Alice"}), a callable '
        "taking a SQLAlchemy Connection, or a list of those."
    )
    if not isinstance(raw, Mapping):
        raise TemplateError(f"{origin} returned a {type(raw).__name__}. {shape}")
    unknown = sorted(str(k) for k in raw if k not in KEYS)
    if unknown:
        raise TemplateError(f"{origin} returned unknown keys {', '.join(unknown)}. {shape}")
    parts: dict[str, dict[str, tuple[Item, ...]]] = {}
    for key in KEYS:
        table = raw.get(key) or {}
        if not isinstance(table, Mapping):
            raise TemplateError(f"{origin}: {key} is a {type(table).__name__}. {shape}")
        parts[key] = {}
        for rev, value in table.items():
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            for item in items:
                bad = _problem(item)
                if bad:
                    raise TemplateError(f"{origin}: {key}[{rev!r}]: {bad}. {shape}")
            parts[key][str(rev)] = tuple(items)
    return RevisionData(parts["before_revision_data"], parts["at_revision_data"], origin)


def _problem(item: object) -> str:
    if callable(item):
        return ""
    if not isinstance(item, Mapping):
        return f"{item!r} is neither a row (dict) nor a callable"
    if not isinstance(item.get("__tablename__"), str):
        return f"the row {item!r} has no __tablename__"
    if len([k for k in item if not str(k).startswith("__")]) == 0:
        return f"the row {item!r} has no columns"
    return ""


def apply(connection: Any, items: tuple[Item, ...]) -> None:
    """Insert the rows (each table reflected once) and call the callables, in order."""
    import sqlalchemy as sa

    tables: dict[tuple[str | None, str], sa.Table] = {}
    for item in items:
        if callable(item):
            item(connection)
            continue
        name, schema = item["__tablename__"], item.get("__schema__")
        key = (schema, name)
        if key not in tables:
            tables[key] = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=connection)
        row = {k: v for k, v in item.items() if not k.startswith("__")}
        connection.execute(tables[key].insert().values(**row))


def where(item: Item) -> str:
    """An item in a few words, for a message: ``a row of users``, ``check_emails()``."""
    if callable(item):
        return f"{getattr(item, '__qualname__', repr(item))}()"
    return f"a row of {item['__tablename__']}"
