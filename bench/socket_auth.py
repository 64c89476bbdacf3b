"""What a new connection over a local server's unix socket costs, by authentication method.

    python bench/socket_auth.py [--connections 200] [--rounds 5]

On a private server started by pgsandbox (as root it runs as an unprivileged user), the
socket's ``pg_hba.conf`` line is switched between ``trust``, ``scram-sha-256`` (the
superuser's verifier as pgsandbox sets it, 64 iterations, and as ``initdb`` makes it, 4096)
and ``peer`` with a user-name map admitting only this OS user as the superuser. The methods
take turns, round by round, so that the machine's load falls on all of them alike; each round
opens and closes ``--connections`` psycopg connections (one ``SELECT 1`` each). Printed: the
median per connection of each method over the rounds, and its ratio to ``trust``.

Also measured, for pytest_pgsandbox.postgresql's client fixture, which gives the test's copy
the name the suite asked for: ``ALTER DATABASE ... RENAME`` there and back, and how long a
closed connection's server process takes to leave (a rename waits for that).
"""

from __future__ import annotations

import argparse
import getpass
import os
import statistics
import time
from pathlib import Path

import psycopg
from psycopg import sql

from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers import roles
from pytest_pgsandbox._engine.servers.choice import open_server
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.servers.options import SUPERUSER
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox.settings import Settings

HOST_LINE = "host all all 127.0.0.1/32 scram-sha-256\n"


def hba(method: str) -> str:
    if method == "peer":
        return f"local all {SUPERUSER} peer map=bench\nlocal all all scram-sha-256\n" + HOST_LINE
    local = "trust" if method == "trust" else "scram-sha-256"
    return f"local all all {local}\n" + HOST_LINE


def switch(admin: ConnInfo, data: Path, method: str, password: str) -> None:
    """Write pg_hba.conf (and the map peer uses) for ``method``, reload, wait for it."""
    (data / "pg_ident.conf").write_text(f"bench {getpass.getuser()} {SUPERUSER}\n")
    (data / "pg_hba.conf").write_text(hba(method))
    with connect(admin, timeout=30) as conn:
        iterations = 4096 if method == "scram-4096" else roles.SCRAM_ITERATIONS
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SUPERUSER),
                sql.Literal(roles.scram_verifier(password, iterations=iterations)),
            )
        )
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)  # the postmaster reloads on SIGHUP, a moment later


def connections(admin: ConnInfo, n: int) -> float:
    """ms per connect + SELECT 1 + close."""
    conninfo = admin.conninfo()
    began = time.perf_counter()
    for _ in range(n):
        with psycopg.connect(conninfo) as conn:
            conn.execute("SELECT 1")
    return (time.perf_counter() - began) * 1000 / n


def renames(admin: ConnInfo, n: int) -> tuple[float, float, float]:
    """ms per rename there and back, per wait for a closed session to leave, per connect."""
    with connect(admin, timeout=30) as conn:
        provision.create_database(conn, "pgsb_bench_rename_a", {"kind": "bench"})
        there, gone, opened = [], [], []
        try:
            for _ in range(n):
                began = time.perf_counter()
                conn.execute('ALTER DATABASE "pgsb_bench_rename_a" RENAME TO "app"')
                there.append(time.perf_counter() - began)
                began = time.perf_counter()
                psycopg.connect(admin.for_db("app").conninfo()).close()
                opened.append(time.perf_counter() - began)
                began = time.perf_counter()
                while conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app'"
                ).fetchone() != (0,):
                    time.sleep(0.0002)
                gone.append(time.perf_counter() - began)
                began = time.perf_counter()
                conn.execute('ALTER DATABASE "app" RENAME TO "pgsb_bench_rename_a"')
                there[-1] += time.perf_counter() - began
        finally:
            for name in ("app", "pgsb_bench_rename_a"):
                provision.drop_database(conn, name)
    ms = 1000.0
    return (
        statistics.median(there) * ms,
        statistics.median(gone) * ms,
        statistics.median(opened) * ms,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bin-dir", action="append", default=[], help="default: the one found")
    args = parser.parse_args()
    print(f"as uid {os.geteuid()}, load average {os.getloadavg()[0]:.1f}")
    for bin_dir in args.bin_dir or [None]:
        settings = Settings(bin_dir=Path(bin_dir) if bin_dir else None)
        server = open_server(settings)
        try:
            if not isinstance(server, LocalCluster):
                raise SystemExit(f"not a local server: {server.describe()}")
            admin = server.admin
            data = server.folder / "data"
            print(f"\n{server.describe()}")
            methods = ["trust", "scram-64", "scram-4096", "peer"]
            times: dict[str, list[float]] = {m: [] for m in methods}
            for r in range(args.rounds):
                for method in methods[r % len(methods) :] + methods[: r % len(methods)]:
                    switch(admin, data, method, admin.password or "")
                    times[method].append(connections(admin, args.connections))
            switch(admin, data, "scram-64", admin.password or "")
            base = statistics.median(times["trust"])
            for method in methods:
                ms = statistics.median(times[method])
                print(f"  {method:<11} {ms:6.2f} ms per connection  ({ms / base:4.2f}x trust)")
            there, gone, opened = renames(admin, 100)
            print(
                f"  rename there and back {there:5.2f} ms; a closed session leaves in "
                f"{gone:5.2f} ms; connect {opened:5.2f} ms"
            )
        finally:
            server.stop()
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
