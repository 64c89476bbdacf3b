"""Named data scenarios in a database: export, load (after checking the fit), diff.

The files are described in ``scenario_files``; this module reads and writes databases.
Everything a caller needs is importable from here.

Loading replaces the rows of every table the scenario (chain) lists, in one transaction: the
tables are emptied, filled with COPY in foreign-key order, and the sequences set. Before it
touches anything, the scenario is compared with the database; a scenario that no longer fits
(a table or column gone, a type changed, a new NOT NULL column it has no values for) is refused
with every mismatch named, so no column's data is ever dropped silently.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors
from psycopg import sql

from pytest_pgsandbox._engine.templates.catalog import PRIMARY_KEY
from pytest_pgsandbox._engine.templates.catalog import Catalog
from pytest_pgsandbox._engine.templates.scenario_files import BLOCK
from pytest_pgsandbox._engine.templates.scenario_files import DEFAULT_DIR
from pytest_pgsandbox._engine.templates.scenario_files import Chain
from pytest_pgsandbox._engine.templates.scenario_files import QualName
from pytest_pgsandbox._engine.templates.scenario_files import Scenario
from pytest_pgsandbox._engine.templates.scenario_files import SequenceValue
from pytest_pgsandbox._engine.templates.scenario_files import TableData
from pytest_pgsandbox._engine.templates.scenario_files import check_name
from pytest_pgsandbox._engine.templates.scenario_files import file_name
from pytest_pgsandbox._engine.templates.scenario_files import find
from pytest_pgsandbox._engine.templates.scenario_files import names
from pytest_pgsandbox._engine.templates.scenario_files import qual as _qual
from pytest_pgsandbox._engine.templates.scenario_files import replace_files
from pytest_pgsandbox._engine.templates.scenario_files import same_bytes as _same_bytes
from pytest_pgsandbox.errors import ScenarioError

__all__ = [
    "DEFAULT_DIR",
    "Catalog",
    "Chain",
    "Loaded",
    "Scenario",
    "check_name",
    "diff",
    "drift",
    "export",
    "find",
    "load",
    "names",
    "occupied",
]

Conn = psycopg.Connection[Any]
_STABLE_OUTPUT = (
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL extra_float_digits = 1",
    "SET LOCAL bytea_output = 'hex'",
    "SET LOCAL client_encoding = 'UTF8'",
)


# -- reading the database -------------------------------------------------------------------


@contextlib.contextmanager
def _snapshot(conn: Conn) -> Iterator[None]:
    """One REPEATABLE READ, READ ONLY transaction with stable output, rolled back at the end;
    ``conn``'s own settings are put back."""
    saved = conn.autocommit, conn.isolation_level, conn.read_only
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    conn.autocommit = False
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    try:
        _stable_output(conn)
        yield
    finally:
        conn.rollback()
        conn.autocommit, conn.isolation_level, conn.read_only = saved


def _stable_output(conn: Conn) -> None:
    for statement in _STABLE_OUTPUT:
        conn.execute(statement)


def _order_by(conn: Conn, oid: int) -> sql.Composable:
    """Primary-key order (text in the "C" collation), else the whole row's text."""
    key = conn.execute(PRIMARY_KEY, (oid,)).fetchall()
    if not key:
        return sql.SQL('_pgsb_row::text COLLATE "C"')
    return sql.SQL(", ").join(
        sql.SQL('_pgsb_row.{} COLLATE "C"' if collatable else "_pgsb_row.{}").format(
            sql.Identifier(name)
        )
        for name, collatable in key
    )


def copy_out(conn: Conn, key: QualName, oid: int, columns: Sequence[str], path: Path) -> int:
    """Write the table's ``columns`` to ``path`` as CSV in a stable order; the row count."""
    query = sql.SQL(
        "COPY (SELECT {cols} FROM {table} AS _pgsb_row ORDER BY {order}) "
        "TO STDOUT (FORMAT csv, HEADER)"
    ).format(
        cols=sql.SQL(", ").join(sql.SQL("_pgsb_row.{}").format(sql.Identifier(c)) for c in columns),
        table=sql.Identifier(*key),
        order=_order_by(conn, oid),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with conn.cursor() as cur:
        with path.open("wb") as out, cur.copy(query) as copy:
            for block in copy:
                out.write(block)
        return max(cur.rowcount, 0)


# -- export ---------------------------------------------------------------------------------


def _matches(pattern: str, key: QualName) -> bool:
    if "." in pattern:
        return fnmatchcase(_qual(key), pattern)
    return fnmatchcase(key[1], pattern)


def _select(catalog: Catalog, tables: Sequence[str], exclude: Sequence[str]) -> list[QualName]:
    everything = sorted(catalog.tables)
    for pattern in (*tables, *exclude):
        if not any(_matches(pattern, k) for k in everything):
            shown = ", ".join(_qual(k) for k in everything[:30]) or "none"
            raise ScenarioError(
                f"no table matches {pattern!r}, so nothing was exported (a mistyped --exclude "
                f"could export data you meant to leave out). Tables: {shown}. Patterns match "
                "'schema.table' when they contain a dot, else the table name; * and ? work."
            )
    chosen = [k for k in everything if not tables or any(_matches(p, k) for p in tables)]
    return [k for k in chosen if not any(_matches(p, k) for p in exclude)]


def export(
    conn: Conn,
    folder: Path,
    name: str,
    *,
    tables: Sequence[str] = (),
    exclude: Sequence[str] = (),
    extends: str | None = None,
) -> Scenario:
    """Write the database's rows as scenario ``name`` under ``folder`` (replacing it).

    ``conn`` is left as it was found: the export reads in a REPEATABLE READ, READ ONLY
    transaction of its own (one snapshot for every table), rolled back at the end.
    """
    check_name(name)
    parent = find(folder, extends) if extends else None
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    staging = target / f".export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _export_into(conn, staging, name, tables, exclude, parent)
        replace_files(target, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Scenario.read(target, name)


def _export_into(
    conn: Conn,
    staging: Path,
    name: str,
    tables: Sequence[str],
    exclude: Sequence[str],
    parent: Chain | None,
) -> Scenario:
    with _snapshot(conn):
        catalog = Catalog.read(conn)
        chosen = _select(catalog, tables, exclude)
        inherited = parent.tables() if parent else {}
        written: list[TableData] = []
        for key in catalog.load_order(conn, chosen):
            oid = catalog.tables[key]
            columns = [c for c in catalog.columns(conn, oid) if not c.generated]
            file = file_name(key)
            rows = copy_out(conn, key, oid, [c.name for c in columns], staging / file)
            table = TableData(key[0], key[1], file, rows, {c.name: c.type for c in columns})
            if key in inherited:
                source, theirs = inherited[key]
                if theirs.columns == table.columns and _same_bytes(
                    source.path(theirs), staging / file
                ):
                    (staging / file).unlink()  # as the parent has it: inherited
                    continue
            written.append(table)
        owned = {catalog.tables[k] for k in chosen}
        sequences = []
        for key, (_oid, owner) in sorted(catalog.sequences.items()):
            if owner is not None and owner not in owned:
                continue  # belongs to a table left out
            if owner is None and not _wanted_free_sequence(key, tables, exclude):
                continue
            last, called = conn.execute(
                sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(*key))
            ).fetchone() or (1, False)
            sequences.append(SequenceValue(key[0], key[1], int(last), bool(called)))
    scenario = Scenario(
        name, staging, parent.name if parent else None, tuple(written), tuple(sequences)
    )
    scenario.write_manifest(staging)
    return scenario


def _wanted_free_sequence(key: QualName, tables: Sequence[str], exclude: Sequence[str]) -> bool:
    """A sequence no table owns follows the --tables / --exclude patterns by its own name."""
    if tables and not any(_matches(p, key) for p in tables):
        return False
    return not any(_matches(p, key) for p in exclude)


# -- fitting the schema ---------------------------------------------------------------------


def drift(conn: Conn, chain: Chain, catalog: Catalog | None = None) -> list[str]:
    """How the scenario no longer fits the database ([] if it fits), one line per problem."""
    catalog = catalog or Catalog.read(conn)
    problems: list[str] = []
    for key, (scenario, table) in chain.tables().items():
        where = f"table {_qual(key)}"
        if len(chain.scenarios) > 1:
            where += f" (from {scenario.name})"
        oid = catalog.tables.get(key)
        if oid is None:
            problems.append(
                f"{where}: not in the database (dropped or renamed?); the scenario has "
                f"{table.rows} rows for it"
            )
            continue
        now = {c.name: c for c in catalog.columns(conn, oid)}
        for column, was in table.columns.items():
            current = now.get(column)
            if current is None:
                problems.append(
                    f"{where}: column {column} ({was}) is gone (dropped or renamed?); the "
                    "scenario has values for it"
                )
            elif current.generated:
                problems.append(f"{where}: column {column} is now generated; it takes no values")
            elif current.type != was:
                problems.append(f"{where}: column {column} was {was}, is now {current.type}")
        for column, current in now.items():
            if (
                column not in table.columns
                and current.not_null
                and not current.has_default
                and not current.generated
            ):
                problems.append(
                    f"{where}: new column {column} ({current.type}) is NOT NULL without a "
                    "default; the scenario has no values for it"
                )
    for key in chain.sequences():
        if key not in catalog.sequences:
            problems.append(f"sequence {_qual(key)}: not in the database (dropped or renamed?)")
    return problems


def drift_error(chain: Chain, problems: Sequence[str], where: str) -> ScenarioError:
    folder = chain.scenarios[-1].folder
    return ScenarioError(
        f"scenario {chain.name!r} ({folder}) does not fit the schema of {where}:\n  "
        + "\n  ".join(problems)
        + "\nNothing was loaded. Export the scenario again from a database with the current "
        f"schema (pgsandbox scenario export {chain.name} --url URL), or edit its manifest "
        "and CSV files to match."
    )


# -- load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    tables: int
    rows: int
    checks_deferred: bool  # triggers and foreign-key checks off while loading, checked after


def load(conn: Conn, chain: Chain, where: str = "the database") -> Loaded:
    """Replace the rows of the chain's tables with the scenario's, and set its sequences.

    Runs in ``conn``'s current transaction (``conn`` must not be in autocommit mode); the
    caller commits. Raises ``ScenarioError`` before changing anything if it does not fit.
    """
    catalog = Catalog.read(conn)
    problems = drift(conn, chain, catalog)
    if problems:
        raise drift_error(chain, problems, where)
    tables = chain.tables()
    _stable_output(conn)
    # As a restore: the rows come with their triggers' effects already, so user triggers and
    # foreign-key triggers stay off while loading (needs a superuser); the keys are checked
    # once at the end instead.
    replica = _try(conn, "SET LOCAL session_replication_role = replica")
    order = catalog.load_order(conn, tables)
    _empty(conn, order)
    total = 0
    for key in order:
        scenario, table = tables[key]
        total += _copy_in(conn, chain, key, scenario, table)
    for key, value in chain.sequences().items():
        conn.execute(
            "SELECT setval(%s::oid::regclass, %s, %s)",
            (catalog.sequences[key][0], value.last_value, value.is_called),
        )
    if replica:
        conn.execute("SET LOCAL session_replication_role = DEFAULT")
        _check_references(conn, chain, catalog, [catalog.tables[k] for k in order])
    return Loaded(len(order), total, replica)


def _try(conn: Conn, statement: str) -> bool:
    try:
        with conn.transaction():
            conn.execute(statement)
    except errors.InsufficientPrivilege:
        return False
    return True


def _empty(conn: Conn, order: Sequence[QualName]) -> None:
    """TRUNCATE the tables at once; if a table left out references one, DELETE instead (which
    fails, naming the constraint, only if such rows exist)."""
    if not order:
        return
    names = sql.SQL(", ").join(sql.Identifier(*k) for k in order)
    try:
        with conn.transaction():
            conn.execute(sql.SQL("TRUNCATE {}").format(names))
        return
    except errors.FeatureNotSupported:
        pass
    for key in reversed(order):
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(*key)))


def _copy_in(conn: Conn, chain: Chain, key: QualName, scenario: Scenario, table: TableData) -> int:
    path = scenario.path(table)
    query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER)").format(
        sql.Identifier(*key), sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
    )
    try:
        with conn.cursor() as cur:
            with cur.copy(query) as copy, path.open("rb") as f:
                while block := f.read(BLOCK):
                    copy.write(block)
            return max(cur.rowcount, 0)
    except psycopg.Error as exc:
        context = (exc.diag.context or "").strip().splitlines()
        detail = f" ({context[0]})" if context else ""
        raise ScenarioError(
            f"scenario {chain.name!r}: loading {_qual(key)} from {path} failed{detail}: "
            f"{_first_line(exc)}. Nothing was loaded; fix the file or export the scenario again."
        ) from None


_FOREIGN_KEYS = """
SELECT c.conname, c.conrelid, c.confrelid,
  ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o)
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o),
  ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, o)
        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o)
FROM pg_constraint c
WHERE c.contype = 'f' AND c.conparentid = 0 AND (c.conrelid = ANY(%s) OR c.confrelid = ANY(%s))
ORDER BY c.conname
"""


def _check_references(conn: Conn, chain: Chain, catalog: Catalog, oids: list[int]) -> None:
    """Foreign keys touching the loaded tables hold (checked once, after loading)."""
    by_oid = {oid: key for key, oid in catalog.tables.items()}
    for name, child, parent, cols, refs in conn.execute(_FOREIGN_KEYS, (oids, oids)).fetchall():
        if int(child) not in by_oid or int(parent) not in by_oid:
            continue  # a partition's share of a key: checked through its parent
        present = sql.SQL(" AND ").join(
            sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in cols
        )
        match = sql.SQL(" AND ").join(
            sql.SQL("p.{} = c.{}").format(sql.Identifier(r), sql.Identifier(c))
            for c, r in zip(cols, refs, strict=True)
        )
        query = sql.SQL(
            "SELECT {cols} FROM {child} c WHERE {present} AND NOT EXISTS "
            "(SELECT 1 FROM {parent} p WHERE {match}) LIMIT 1"
        ).format(
            cols=sql.SQL(", ").join(sql.SQL("c.{}::text").format(sql.Identifier(c)) for c in cols),
            child=sql.Identifier(*by_oid[int(child)]),
            present=present,
            parent=sql.Identifier(*by_oid[int(parent)]),
            match=match,
        )
        row = conn.execute(query).fetchone()
        if row is not None:
            values = ", ".join(f"{c}={v}" for c, v in zip(cols, row, strict=True))
            raise ScenarioError(
                f"scenario {chain.name!r}: a row of {_qual(by_oid[int(child)])} ({values}) "
                f"has no match in {_qual(by_oid[int(parent)])} (foreign key {name}). Nothing "
                "was loaded. Export the scenario again, or include the referenced rows."
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def occupied(conn: Conn, chain: Chain) -> list[tuple[str, int]]:
    """Tables of the chain that hold rows in the database, with their row counts."""
    catalog = Catalog.read(conn)
    found = []
    for key in chain.tables():
        if key in catalog.tables:
            (count,) = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*key))
            ).fetchone() or (0,)
            if count:
                found.append((_qual(key), int(count)))
    return found


# -- diff -----------------------------------------------------------------------------------


def diff(conn: Conn, chain: Chain, scratch: Path, shown: int = 5) -> list[str]:
    """How the database's rows differ from the scenario's ([] if they do not).

    The database's tables are written as the scenario would write them (into ``scratch``),
    then compared row by row.
    """
    problems = drift(conn, chain)
    if problems:
        return ["the scenario does not fit this database's schema:", *problems]
    lines: list[str] = []
    with _snapshot(conn):
        catalog = Catalog.read(conn)
        for key, (scenario, table) in chain.tables().items():
            mine = scratch / file_name(key)
            copy_out(conn, key, catalog.tables[key], list(table.columns), mine)
            if _same_bytes(mine, scenario.path(table)):
                continue
            theirs = _records(scenario.path(table))
            now = _records(mine)
            gone = list((theirs - now).elements())
            new = list((now - theirs).elements())
            lines.append(
                f"table {_qual(key)}: {len(gone)} rows only in the scenario, "
                f"{len(new)} only in the database"
            )
            lines += [f"  - {_row(r)}" for r in gone[:shown]]
            lines += [f"  + {_row(r)}" for r in new[:shown]]
        for key, value in chain.sequences().items():
            last, called = conn.execute(
                sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(*key))
            ).fetchone() or (None, None)
            if (last, called) != (value.last_value, value.is_called):
                lines.append(
                    f"sequence {_qual(key)}: scenario {value.last_value} "
                    f"(is_called={value.is_called}), database {last} (is_called={called})"
                )
    return lines


def _records(path: Path) -> Counter[tuple[str, ...]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader, None)  # the header
        return Counter(tuple(r) for r in reader)


def _row(record: tuple[str, ...]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(record)
    text = out.getvalue()
    return text if len(text) <= 200 else text[:197] + "..."
