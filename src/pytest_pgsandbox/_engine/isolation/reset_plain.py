"""Reset for a role that is not a superuser: the catalog digest and the restore in
foreign-key order (see :mod:`.reset` for the whole design).

Such a role may neither make event triggers nor turn foreign keys off. So DDL is found as a
change of ``_pgsandbox.catalog()``, a digest of the catalog; and the restore keeps foreign
keys on: rows that are not the template's are deleted children first, missing rows are
inserted parents first, rows changed in place are updated back by primary key.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pytest_pgsandbox._engine.templates import catalog

CATALOG_DIGEST = """
CREATE FUNCTION _pgsandbox.catalog() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
BEGIN RETURN (  -- PL/pgSQL: its plan is kept for the session (a SQL function's is not)
WITH ns AS (
    SELECT oid, nspname, nspowner, nspacl FROM pg_namespace
    WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', '_pgsandbox')
), rel AS (
    SELECT c.oid, c.relname, c.relkind, c.relnamespace, c.relowner, c.relpersistence,
           c.relrowsecurity, c.relforcerowsecurity, c.relacl, c.reloptions
    FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM ns)
)
SELECT count(*) || ' ' || sum(hashtextextended(x, 0)) FROM (  -- any order: no sort
    SELECT concat_ws(' ', 'n', oid, nspname, nspowner, nspacl) AS x FROM ns
    UNION ALL
    SELECT concat_ws(' ', 'c', oid, relname, relkind, relnamespace, relowner, relpersistence,
                     relrowsecurity, relforcerowsecurity, relacl, reloptions) FROM rel
    UNION ALL
    SELECT concat_ws(' ', 'a', a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod,
                     a.attnotnull, a.atthasdef, a.attisdropped, a.attidentity, a.attgenerated,
                     a.attacl)
    FROM pg_attribute a WHERE a.attrelid IN (SELECT oid FROM rel) AND a.attnum > 0
    UNION ALL
    SELECT concat_ws(' ', 'd', d.oid, d.adrelid, d.adnum) FROM pg_attrdef d
    WHERE d.adrelid IN (SELECT oid FROM rel)
    UNION ALL
    SELECT concat_ws(' ', 'k', co.oid, co.conname, co.convalidated) FROM pg_constraint co
    WHERE co.connamespace IN (SELECT oid FROM ns)
    UNION ALL
    SELECT concat_ws(' ', 't', t.oid, t.tgname, t.tgenabled) FROM pg_trigger t
    WHERE t.tgrelid IN (SELECT oid FROM rel) AND NOT t.tgisinternal
    UNION ALL
    SELECT concat_ws(' ', 'r', r.oid, md5(r.ev_action::text)) FROM pg_rewrite r
    WHERE r.ev_class IN (SELECT oid FROM rel)
    UNION ALL
    SELECT concat_ws(' ', 'o', p.oid, p.polname, md5(p.polqual::text)) FROM pg_policy p
    WHERE p.polrelid IN (SELECT oid FROM rel)
    UNION ALL
    SELECT concat_ws(' ', 's', s.seqrelid, s.seqtypid, s.seqstart, s.seqincrement, s.seqmax,
                     s.seqmin, s.seqcache, s.seqcycle)
    FROM pg_sequence s WHERE s.seqrelid IN (SELECT oid FROM rel)
    UNION ALL
    SELECT concat_ws(' ', 'f', p.oid, p.proname, p.proowner, p.proacl, md5(p.prosrc))
    FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM ns)
    UNION ALL
    SELECT concat_ws(' ', 'y', t.oid, t.typname, t.typowner, t.typacl) FROM pg_type t
    WHERE t.typnamespace IN (SELECT oid FROM ns) AND t.typtype IN ('b', 'd', 'e', 'm', 'r')
    UNION ALL
    SELECT concat_ws(' ', 'e', e.oid, e.enumlabel) FROM pg_enum e
    UNION ALL
    SELECT concat_ws(' ', 'x', e.oid, e.extname, e.extversion) FROM pg_extension e
    UNION ALL
    SELECT concat_ws(' ', 'p', a.oid, a.defaclrole, a.defaclnamespace, a.defaclacl)
    FROM pg_default_acl a
) objects); END
$$;
"""

# Tables of the user's schema: ordinary and partitioned, outside the system's schemas and ours.
LEAVES = """
WITH RECURSIVE below(relid, leaf) AS (
    SELECT oid, oid FROM pg_class WHERE oid = ANY(%(oids)s)
    UNION
    SELECT b.relid, i.inhrelid FROM below b JOIN pg_inherits i ON i.inhparent = b.leaf
)
SELECT b.relid, b.leaf FROM below b JOIN pg_class c ON c.oid = b.leaf WHERE c.relkind = 'r'
"""

# The start of both resets: the database's declarations, and the checks that come first.
RESET_PLAIN = """
    IF _pgsandbox.catalog() IS DISTINCT FROM (SELECT c.digest FROM _pgsandbox.catalog c) THEN
        RETURN 'ddl';
    END IF;
    IF wrote IS NOT NULL THEN
        wrote := ARRAY(SELECT l.leaf FROM _pgsandbox.leaves l WHERE l.relid = ANY(wrote));
        changed := ARRAY(SELECT l.leaf FROM _pgsandbox.leaves l WHERE l.relid = ANY(changed));
        DELETE FROM _pgsandbox.touched;
        -- Rows that are not the template's go children first, missing ones come back parents
        -- first, changed ones are updated back. Deleting first fails where a changed row
        -- points at a new one; putting back first, where a new row holds a unique value.
        FOR attempt IN 1..2 LOOP
            BEGIN
                n := 0;
                FOR r IN SELECT o.triggers_off FROM _pgsandbox.ordered o
                         WHERE o.relid = ANY(wrote) AND o.triggers_off IS NOT NULL LOOP
                    EXECUTE r.triggers_off;
                END LOOP;
                FOREACH phase IN ARRAY CASE attempt WHEN 1 THEN '{drop,put,revert}'::text[]
                                       ELSE '{put,revert,drop}'::text[] END LOOP
                    IF phase = 'drop' THEN
                        FOR r IN SELECT o.relid, o.drop_new, s.inserted FROM _pgsandbox.ordered o
                                 JOIN _pgsandbox.restore s USING (relid)
                                 WHERE o.relid = ANY(wrote) ORDER BY o.pos DESC LOOP
                            IF r.inserted IS NOT NULL AND NOT r.relid = ANY(changed) THEN
                                EXECUTE r.inserted USING mark;
                            ELSE
                                EXECUTE r.drop_new;
                            END IF;
                            n := n + 1;
                        END LOOP;
                    ELSE
                        FOR r IN SELECT CASE phase WHEN 'put' THEN o.put_back ELSE o.revert END
                                        AS statement
                                 FROM _pgsandbox.ordered o WHERE o.relid = ANY(changed)
                                 ORDER BY o.pos LOOP
                            CONTINUE WHEN r.statement IS NULL;
                            EXECUTE r.statement;
                            rewritten := true;
                        END LOOP;
                    END IF;
                END LOOP;
                FOR r IN SELECT o.triggers_on FROM _pgsandbox.ordered o
                         WHERE o.relid = ANY(wrote) AND o.triggers_on IS NOT NULL LOOP
                    EXECUTE r.triggers_on;
                END LOOP;
                -- A foreign key's action reached a table that was not put back.
                IF EXISTS (SELECT FROM _pgsandbox.touched t WHERE t.relid <> ALL(wrote)) THEN
                    RETURN 'ddl';
                END IF;
                IF rewritten THEN
                    -- This block is a subtransaction: the rows put back carry its id, newer
                    -- than txid_current()'s. The mark takes it from a row written here.
                    UPDATE _pgsandbox.mark SET at = at;
                    UPDATE _pgsandbox.mark SET at = xmin;
                    rewritten := false;
                END IF;
                EXIT;
            EXCEPTION WHEN OTHERS THEN
                IF attempt = 2 THEN
                    RETURN 'ddl';
                END IF;
            END;
        END LOOP;
        DELETE FROM _pgsandbox.touched;
    END IF;
"""


def fk_order(conn: psycopg.Connection[Any], oids: list[int]) -> dict[int, int]:
    """Each table's place when referenced tables come before those that refer to them.

    Foreign keys between partitioned tables count for their partitions. In a cycle the order
    is arbitrary: a restore that then breaks a key is left to a swap.
    """
    from graphlib import CycleError
    from graphlib import TopologicalSorter

    leaves: dict[int, list[int]] = {}
    for relid, leaf in conn.execute(LEAVES, {"oids": oids}).fetchall():
        leaves.setdefault(relid, []).append(leaf)
    graph: TopologicalSorter[int] = TopologicalSorter()
    for oid in oids:
        graph.add(oid)
    for child, parent in conn.execute(
        "SELECT conrelid, confrelid FROM pg_constraint WHERE contype = 'f' "
        "AND conrelid = ANY(%(oids)s) AND confrelid <> conrelid",
        {"oids": oids},
    ).fetchall():
        for c in leaves.get(child, [child]):
            for p in leaves.get(parent, [parent]):
                if c != p:
                    graph.add(c, p)
    try:
        return {oid: pos for pos, oid in enumerate(graph.static_order())}
    except CycleError:
        return {oid: pos for pos, oid in enumerate(oids)}


def plain_restore(
    conn: psycopg.Connection[Any],
    oid: int,
    table: sql.Composable,
    columns: list[str],
    copy: sql.Composable | None,
) -> tuple[str, str | None, str | None, str | None, str | None]:
    """The statements that put ``table`` back with foreign keys on (see ``RESET_PLAIN``):
    (drop rows not the template's, put back missing rows, update changed rows back,
    user triggers off, and on again)."""
    key = [r[0] for r in conn.execute(catalog.PRIMARY_KEY, (oid,)).fetchall()]
    always = {
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attidentity = 'a'", (oid,)
        ).fetchall()
    }
    put_back = revert = None
    if copy is None:
        drop_new = sql.SQL("DELETE FROM ONLY {}").format(table)
    else:
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)

        def of(alias: str, names: list[str]) -> sql.Composable:
            return sql.SQL(", ").join(sql.Identifier(alias, c) for c in names)

        insert = sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} b").format(
            table, cols, of("b", columns), copy
        )
        if key:
            same = sql.SQL("({}) = ({})").format(of("t", key), of("b", key))
            drop_new = sql.SQL(
                "DELETE FROM ONLY {} t WHERE NOT EXISTS (SELECT FROM {} b WHERE {})"
            ).format(table, copy, same)
            put_back = insert + sql.SQL(
                " WHERE NOT EXISTS (SELECT FROM ONLY {} t WHERE {})"
            ).format(table, same)
            settable = [c for c in columns if c not in key and c not in always]
            if settable:
                revert = sql.SQL(
                    "UPDATE ONLY {} t SET ({}) = ROW({}) FROM {} b WHERE {} "
                    "AND ROW({})::text IS DISTINCT FROM ROW({})::text"
                ).format(
                    table,
                    sql.SQL(", ").join(sql.Identifier(c) for c in settable),
                    of("b", settable),
                    copy,
                    same,
                    of("t", columns),
                    of("b", columns),
                )
        else:  # no key: nothing can refer to its rows, so all of them go back
            drop_new = sql.SQL("DELETE FROM ONLY {}").format(table)
            put_back = insert
    triggers = conn.execute(
        "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal "
        "AND tgname <> '_pgsandbox_wrote' AND tgenabled <> 'D' ORDER BY tgname",
        (oid,),
    ).fetchall()
    off = on = None
    if triggers:
        how = {"O": "", "A": "ALWAYS ", "R": "REPLICA "}
        off = sql.SQL("ALTER TABLE ONLY {} {}").format(
            table,
            sql.SQL(", ").join(
                sql.SQL("DISABLE TRIGGER {}").format(sql.Identifier(n)) for n, _ in triggers
            ),
        )
        on = sql.SQL("ALTER TABLE ONLY {} {}").format(
            table,
            sql.SQL(", ").join(
                sql.SQL("ENABLE " + how.get(str(e), "") + "TRIGGER {}").format(sql.Identifier(n))
                for n, e in triggers
            ),
        )

    def text(q: sql.Composable | None) -> str | None:
        return None if q is None else q.as_string(conn)

    return (
        drop_new.as_string(conn),
        text(put_back),
        text(revert),
        text(off),
        text(on),
    )
