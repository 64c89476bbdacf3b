"""How to copy a template fastest: CREATE DATABASE's strategies, measured over many copies.

    python bench/clone_strategy.py [--copies 200]

On a private server started by pgsandbox (data on /dev/shm when it has room), with a
30-table template of 2,000 rows: back-to-back CREATE DATABASE ... TEMPLATE + DROP DATABASE
with ``STRATEGY WAL_LOG`` (the default since PostgreSQL 15), ``STRATEGY FILE_COPY``, and on
PostgreSQL 18 ``FILE_COPY`` with ``file_copy_method = clone``. Copy costs drift upward over
many iterations on some file systems, so the first and last tenth are printed separately.
Each set of binaries is measured with the data directory in RAM and on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import psycopg
from psycopg import sql

from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers.choice import open_server
from pytest_pgsandbox._engine.servers.discovery import find_binaries
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.errors import BinariesNotFound
from pytest_pgsandbox.settings import Settings

LABEL = {"kind": "bench"}


def build_template(
    conn: psycopg.Connection[tuple[object, ...]], admin: ConnInfo, name: str
) -> None:
    provision.create_database(conn, name, LABEL)
    with connect(admin.for_db(name), timeout=30) as db:
        for t in range(30):
            db.execute(
                f"CREATE TABLE t{t:02d} (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                "name text NOT NULL, created_at timestamptz DEFAULT now())"
            )
            db.execute(
                sql.SQL("INSERT INTO {} (name) SELECT 'Alice Chen ' || g ").format(
                    sql.Identifier(f"t{t:02d}")
                )
                + sql.SQL("FROM generate_series(1, 67) g")
            )
    conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(name)))


def measure(
    conn: psycopg.Connection[tuple[object, ...]], template: str, strategy: str, copies: int
) -> tuple[list[float], list[float]]:
    creates, drops = [], []
    for i in range(copies):
        name = f"pgsb_bench_copy_{i}"
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY {}").format(
            sql.Identifier(name), sql.Identifier(template), sql.SQL(strategy)
        )
        began = time.perf_counter()
        conn.execute(query)
        creates.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
        drops.append((time.perf_counter() - began) * 1000)
    return creates, drops


def run(bin_dir: str, copies: int, tmpfs: bool) -> None:
    settings = Settings(bin_dir=Path(bin_dir), tmpfs=tmpfs)
    server = open_server(settings)
    try:
        print(f"\n{server.describe()}, data on {'RAM if room' if tmpfs else 'disk'}")
        with connect(server.admin, timeout=30) as conn:
            build_template(conn, server.admin, "pgsb_bench_template")
            major = conn.info.server_version // 10000
            variants = [("WAL_LOG", None), ("FILE_COPY", None)]
            if major >= 18:
                variants.append(("FILE_COPY", "clone"))
            tenth = max(1, copies // 10)
            for strategy, method in variants:
                if method:
                    conn.execute(f"ALTER SYSTEM SET file_copy_method = {method}")
                    conn.execute("SELECT pg_reload_conf()")
                try:
                    creates, drops = measure(conn, "pgsb_bench_template", strategy, copies)
                except psycopg.Error as exc:
                    print(f"  {strategy} ({method}): not available here: {exc}")
                    continue
                finally:
                    if method:
                        conn.execute("ALTER SYSTEM RESET file_copy_method")
                        conn.execute("SELECT pg_reload_conf()")
                name = strategy + (f" (file_copy_method={method})" if method else "")
                print(
                    f"  {name:<36} create: first {statistics.median(creates[:tenth]):5.1f} ms,"
                    f" last {statistics.median(creates[-tenth:]):5.1f} ms,"
                    f" all {statistics.median(creates):5.1f} ms;"
                    f" drop {statistics.median(drops):5.1f} ms"
                )
            provision.drop_database(conn, "pgsb_bench_template")
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=200, help="copies per strategy")
    args = parser.parse_args()
    kinds = ["embedded"]
    with contextlib.suppress(BinariesNotFound):
        kinds.append(str(find_binaries(use_embedded=False).bin_dir))
    print(f"CREATE DATABASE ... TEMPLATE, {args.copies} copies per strategy, medians")
    for kind in kinds:
        for tmpfs in (True, False):
            run(kind, args.copies, tmpfs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
