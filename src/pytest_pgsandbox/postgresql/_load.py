"""pytest-postgresql's ``load=`` items, read once: a hash of what they are, and how to run them.

An item is a ``Path`` to a ``.sql`` file, an import path (``"app.db:load"`` or
``"app.db.load"``), or a callable taking ``host``, ``port``, ``user``, ``dbname`` and
``password`` (and ``autocommit`` when it accepts it) as keyword arguments. The hash covers
the SQL file's bytes and the source file of each callable's module, so a template built from
them is built again exactly when one of them changes.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import traceback
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox.errors import TemplateError

LoadItem = Callable[..., Any] | str | Path


@dataclass(frozen=True)
class Loader:
    """One ``load=`` item, resolved: a SQL file or a callable."""

    shown: str  # how error messages name it
    sql_file: Path | None = None
    func: Callable[..., Any] | None = None

    def digest(self) -> str:
        h = hashlib.sha256(self.shown.encode())
        if self.sql_file is not None:
            h.update(self.sql_file.read_bytes())
        elif self.func is not None:
            h.update(_code_of(self.func))
        return h.hexdigest()

    def run(self, info: ConnInfo, autocommit: bool, timeout: float) -> None:
        """Load into the database ``info`` (the template being built)."""
        import psycopg

        if self.sql_file is not None:
            text = self.sql_file.read_text()
            with psycopg.connect(
                info.conninfo(), autocommit=autocommit, connect_timeout=max(1, round(timeout))
            ) as conn:
                try:
                    conn.execute(text.encode())  # no parameters: % signs are left alone
                    if not autocommit:
                        conn.commit()
                except psycopg.Error as exc:
                    raise TemplateError(
                        f"load={self.shown}: {str(exc).strip().splitlines()[0]}"
                    ) from None
            return
        if self.func is None:  # pragma: no cover - made by resolve()
            return
        kwargs: dict[str, Any] = {
            "host": info.host,
            "port": info.port,
            "user": info.user,
            "dbname": info.dbname,
            "password": info.password,
        }
        if _accepts(self.func, "autocommit"):
            kwargs["autocommit"] = autocommit
        try:
            result = self.func(**kwargs)
            if inspect.isawaitable(result):
                import asyncio

                asyncio.run(_wait(result))
        except Exception as exc:
            frames = [
                f
                for f in traceback.extract_tb(exc.__traceback__)
                if "pytest_pgsandbox" not in f.filename
            ][-3:]
            where = "".join(f"\n  at {f.filename}:{f.lineno} in {f.name}" for f in frames)
            raise TemplateError(
                f"load={self.shown} raised {type(exc).__name__}: {exc}{where}"
            ) from None


async def _wait(result: Any) -> None:
    await result


def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _code_of(func: Callable[..., Any]) -> bytes:
    """The source of the module defining ``func`` (its own code when there is no file)."""
    target = inspect.unwrap(getattr(func, "func", func))  # functools.partial too
    module = inspect.getmodule(target)
    try:
        path = inspect.getsourcefile(module) if module is not None else None
    except TypeError:
        path = None
    if path and Path(path).is_file():
        return Path(path).read_bytes()
    code = getattr(target, "__code__", None)
    if code is not None:
        return bytes(code.co_code) + repr(code.co_consts).encode()
    return repr(target).encode()


def _name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}:{getattr(func, '__qualname__', repr(func))}"


def resolve(item: LoadItem, base: Path) -> Loader:
    """The loader for one ``load=`` item (``base`` anchors relative SQL paths)."""
    if isinstance(item, Path) or (isinstance(item, str) and item.endswith(".sql")):
        path = Path(item).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise TemplateError(
                f"load={item}: no such SQL file: {path}. Give a path relative to the folder "
                "pytest runs in (rootdir) or an absolute one."
            )
        return Loader(str(path), sql_file=path)
    if isinstance(item, str):
        parts = re.split("[.:]", item)
        module_name, attr = ".".join(parts[:-1]), parts[-1]
        try:
            module = importlib.import_module(module_name)
            func = getattr(module, attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise TemplateError(
                f"load={item!r}: could not import it ({type(exc).__name__}: {exc}). Give a "
                "Path to a .sql file, a callable, or 'package.module:function'."
            ) from None
        if not callable(func):
            raise TemplateError(f"load={item!r} is not callable.")
        return Loader(item, func=func)
    if callable(item):
        return Loader(_name(item), func=item)
    raise TemplateError(
        f"load= got {item!r}: give a Path to a .sql file, a callable, or 'package.module:function'."
    )


def digest(loaders: Sequence[Loader], base: str, autocommit: bool) -> str:
    """The hash of a template built from ``base`` (a template's hash, or "") by ``loaders``."""
    h = hashlib.sha256(f"pytest-postgresql load\nbase {base}\nautocommit {autocommit}\n".encode())
    for loader in loaders:
        h.update(f"{loader.digest()}\n".encode())
    return h.hexdigest()
