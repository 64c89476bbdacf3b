"""The ``freeze_time`` decorator (light: importing it imports no database driver)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def _is_freezable(obj: Any) -> bool:
    clock = getattr(obj, "time", None)
    return all(callable(getattr(clock, name, None)) for name in ("freeze", "unfreeze", "__enter__"))


def freeze_time(when: str | dt.datetime | dt.date | None) -> Callable[[F], F]:
    """Freeze time in Python and in the test's database for the whole test::

        @freeze_time("1999-12-31 23:59:59")
        def test_party(pg): ...

    Naive values are UTC. The test must use exactly one database fixture (``pg``,
    ``postgresql_db``, ``transacted_postgresql_db`` or one made with ``create_fixture``).
    """

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            found = [a for a in (*args, *kwargs.values()) if _is_freezable(a)]
            if len(found) != 1:
                name = getattr(func, "__name__", type(func).__name__)
                raise RuntimeError(
                    "You must use exactly *one* database fixture (pg, postgresql_db, "
                    "transacted_postgresql_db...) with the `freeze_time` decorator. "
                    f"{name!r} has {len(found)}."
                )
            with found[0].time.freeze(when):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
