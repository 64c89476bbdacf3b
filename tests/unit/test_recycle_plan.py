"""What clone recycling does with what a test wrote (no server: the decisions alone)."""

from __future__ import annotations

from pytest_pgsandbox._engine.isolation.recycle import CopyState
from pytest_pgsandbox._engine.isolation.recycle import TemplateRows
from pytest_pgsandbox._engine.isolation.recycle import parse_counts
from pytest_pgsandbox._engine.isolation.recycle import restore_plan
from pytest_pgsandbox._engine.isolation.recycle import written

ROWS = TemplateRows(
    tables={16390: "public.users", 16400: "public.big"},
    rewrite={16390: "DELETE FROM ONLY public.users; INSERT INTO public.users ..."},
    mark="812",
)


def test_counts_are_read_and_compared_with_those_the_copy_was_handed_out_with() -> None:
    before = parse_counts("16390 5 0 0,1259 3 1 0")
    assert before == {16390: (5, 0, 0), 1259: (3, 1, 0)}
    assert written(before, parse_counts("16390 7 0 0,1259 3 1 0,16400 0 2 0")) == {
        16390: (2, 0, 0),
        16400: (0, 2, 0),
    }
    assert written(before, before) == {}
    assert written(before, parse_counts("16390 4 0 0")) is None  # counters were reset


def test_rows_only_added_are_deleted_by_age_others_rewritten() -> None:
    copy = CopyState(fingerprint="f", mark="812")
    statements, rewritten = restore_plan(ROWS, copy, {16400: (3, 0, 0)}) or ("", True)
    assert statements == "DELETE FROM ONLY public.big WHERE age(xmin) < age('812'::xid);"
    assert not rewritten
    statements, rewritten = restore_plan(ROWS, copy, {16390: (1, 1, 0)}) or ("", False)
    assert statements == ROWS.rewrite[16390]
    assert rewritten


def test_what_rows_cannot_undo_drops_the_copy() -> None:
    copy = CopyState(fingerprint="f", mark="812")
    assert restore_plan(ROWS, copy, {1259: (0, 1, 0)}) is None  # pg_class: DDL, TRUNCATE
    assert restore_plan(ROWS, copy, {2613: (1, 0, 0)}) is None  # a large object
    assert restore_plan(ROWS, copy, {16500: (1, 0, 0)}) is None  # not a template table
    assert restore_plan(ROWS, copy, {16400: (0, 0, 1)}) is None  # too large to keep rows


def test_replica_mode_only_where_a_delete_of_added_rows_could_fire_something() -> None:
    from pytest_pgsandbox._engine.isolation.recycle import needs_replica
    from pytest_pgsandbox._engine.isolation.recycle import restore_sql_for

    rows = TemplateRows(
        tables=ROWS.tables, rewrite=ROWS.rewrite, mark="812", plain=frozenset({16400})
    )
    assert not needs_replica(rows, [16400], rewritten=False)  # added to a plain table only
    assert needs_replica(rows, [16400, 16390], rewritten=False)  # users has a trigger or a key
    assert needs_replica(rows, [16400], rewritten=True)  # a rewrite puts back every row
    off = restore_sql_for("DELETE ...;", "", [16400], rewritten=False, replica=False)
    assert "session_replication_role" not in off
    assert "session_replication_role" in restore_sql_for("DELETE ...;", "", [16390], False)
