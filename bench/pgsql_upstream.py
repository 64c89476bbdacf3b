"""Run pytest-pgsql's own test suite against pytest-pgsandbox, and print the counts.

    python bench/pgsql_upstream.py PATH_TO_PYTEST_PGSQL_CHECKOUT [--shim] [pytest args...]

PATH is a checkout (or an unpacked archive) of CloverHealth/pytest-pgsql. Its tests
(``pytest_pgsql/tests/``) are copied into a temporary folder outside this repository and
changed mechanically, only where a user moving to pytest-pgsandbox and SQLAlchemy 2 must:

- the import line: ``import pytest_pgsql`` becomes ``import pytest_pgsandbox.pgsql as
  pytest_pgsql`` (``--shim`` leaves the imports as they are, for the ``pytest_pgsql`` shim);
- raw SQL strings given to ``execute()`` are wrapped in ``text()``, and ``Engine.execute``
  (gone in 2.0) runs on a connection of the engine's and commits, as it did (the target of
  ``getattr(db, name).execute`` is only known when it runs, so every ``x.execute(q)`` becomes a
  call of a small helper that does this);
- ``MetaData(bind=x)`` loses ``bind`` and ``create_all()`` on it gets ``x``;
- ``select([a, b])`` becomes ``select(a, b)``; ``dict(row)`` becomes ``dict(row._mapping)``.

The suite then runs with its tox options (``--pg-conf-opt=track_commit_timestamp=True
--pg-extensions=btree_gin,,btree_gist,``) plus any pytest arguments given (``-n 2``,
``-p randomly``...). The last line is pytest's summary; the exit status is pytest's. Needs
pytest-mock (the suite uses ``mocker``).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TOX_OPTIONS = [
    "--pg-conf-opt=track_commit_timestamp=True",
    "--pg-extensions=btree_gin,,btree_gist,",
]

PRELUDE = '''
import sqlalchemy as _sa2


def _sa2_sql(query):
    """Raw SQL as SQLAlchemy 2 takes it (text()); anything else as it is."""
    return _sa2.text(query) if isinstance(query, str) else query


def _sa2_execute(target, query, *args, **kwargs):
    """target.execute(query) as SQLAlchemy 2 takes it: an Engine has no execute() (it ran the
    query on a connection of its own and committed)."""
    if isinstance(target, _sa2.engine.Engine):
        connection = target.connect()
        result = connection.execute(_sa2_sql(query), *args, **kwargs)
        connection.commit()
        return result
    return target.execute(_sa2_sql(query), *args, **kwargs)


def _sa2_mapping(row):
    """A row as dict() takes it in SQLAlchemy 2."""
    return getattr(row, "_mapping", row)
'''


class _Sqlalchemy2(ast.NodeTransformer):
    """The SQLAlchemy 1.3 spellings the suite uses, in SQLAlchemy 2's."""

    def __init__(self) -> None:
        self.binds: dict[str, ast.expr] = {}  # MetaData variable -> what it was bound to

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        value = node.value
        if _is_call(value, "MetaData") and len(node.targets) == 1:
            assert isinstance(value, ast.Call)
            bind = _pop_keyword(value, "bind")
            target = node.targets[0]
            if bind is not None and isinstance(target, ast.Name):
                self.binds[target.id] = bind
        self.generic_visit(node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        if _is_call(node, "MetaData"):
            _pop_keyword(node, "bind")  # MetaData(bind=...) inside an expression
        if isinstance(func, ast.Attribute):
            if func.attr == "execute" and node.args:
                return ast.Call(
                    ast.Name("_sa2_execute", ast.Load()), [func.value, *node.args], node.keywords
                )
            if func.attr == "select" and len(node.args) == 1:
                if isinstance(node.args[0], ast.List):
                    node.args = list(node.args[0].elts)
            elif (
                func.attr == "create_all"
                and not node.args
                and isinstance(func.value, ast.Name)
                and func.value.id in self.binds
            ):
                node.args = [self.binds[func.value.id]]
        elif isinstance(func, ast.Name) and func.id == "dict" and len(node.args) == 1:
            node.args[0] = _wrap("_sa2_mapping", node.args[0])
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        # ``execute = postgresql_db.engine.execute`` (a reference, not a call)
        if node.attr == "execute" and _is_engine(node.value):
            node.value = _connect(node.value)
        return node


def _is_call(node: ast.AST, name: str) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == name) or (
        isinstance(func, ast.Attribute) and func.attr == name
    )


def _pop_keyword(node: ast.Call, name: str) -> ast.expr | None:
    for keyword in node.keywords:
        if keyword.arg == name:
            node.keywords.remove(keyword)
            return keyword.value
    return None


def _is_engine(node: ast.AST) -> bool:
    """``pg_engine`` or ``something.engine``: an Engine, which has no execute() in 2.0."""
    if isinstance(node, ast.Name):
        return node.id.endswith("engine")
    return isinstance(node, ast.Attribute) and node.attr == "engine"


def _connect(engine: ast.expr) -> ast.expr:
    return ast.Call(ast.Attribute(engine, "connect", ast.Load()), [], [])


def _wrap(helper: str, node: ast.expr) -> ast.expr:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == helper:
        return node
    return ast.Call(ast.Name(helper, ast.Load()), [node], [])


class _Imports(ast.NodeTransformer):
    """``pytest_pgsql`` imports, pointed at ``pytest_pgsandbox.pgsql``."""

    def visit_Import(self, node: ast.Import) -> ast.AST:
        names = []
        for alias in node.names:
            if alias.name == "pytest_pgsql" or alias.name.startswith("pytest_pgsql."):
                names.append(ast.alias("pytest_pgsandbox.pgsql", alias.asname or "pytest_pgsql"))
            else:
                names.append(alias)
        node.names = names
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.module and (
            node.module == "pytest_pgsql" or node.module.startswith("pytest_pgsql.")
        ):
            node.module = "pytest_pgsandbox.pgsql" + node.module[len("pytest_pgsql") :]
        return node


def convert(source: str, shim: bool) -> str:
    tree = ast.parse(source)
    tree = _Sqlalchemy2().visit(tree)
    if not shim:
        tree = _Imports().visit(tree)
    tree = ast.fix_missing_locations(tree)
    docstring = ""
    if tree.body and isinstance(tree.body[0], ast.Expr):  # keep the docstring first
        docstring = ast.unparse(tree.body[0]) + "\n"
        tree.body = tree.body[1:]
    return docstring + PRELUDE + "\n" + ast.unparse(tree) + "\n"


def prepare(checkout: Path, into: Path, shim: bool) -> Path:
    tests = checkout / "pytest_pgsql" / "tests"
    if not tests.is_dir():
        raise SystemExit(f"{checkout}: no pytest_pgsql/tests folder; give a pytest-pgsql checkout")
    suite = into / "pgsql_upstream_tests"
    suite.mkdir()
    for path in sorted(tests.glob("*.py")):
        (suite / path.name).write_text(convert(path.read_text(), shim))
    (into / "pytest.ini").write_text("[pytest]\n")
    return suite


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    checkout, rest = Path(argv[0]), argv[1:]
    shim = "--shim" in rest
    rest = [a for a in rest if a != "--shim"]
    keep = os.environ.get("PGSQL_UPSTREAM_KEEP")  # a folder to leave the converted suite in
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="pgsql-upstream-"))
    if keep:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    try:
        suite = prepare(checkout, work, shim)
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *TOX_OPTIONS]
        command += ["-q", "-rfE", *rest, suite.name]
        return subprocess.run(command, cwd=work, check=False).returncode
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
