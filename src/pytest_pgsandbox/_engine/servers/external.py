"""An existing server: where its URL comes from, and whether it is safe to use.

- ``url_from_command``: the URL printed by a command (a vault or cloud CLI), as a libpq URL,
  a ``key=value`` string or an RDS-format JSON secret. Its output is never shown.
- ``check_host``: a server on another machine is used only when its host is allowed.
- ``check_database``: the URL must name a maintenance database (or one of ours), never an
  application's database: such a URL is often the application's own, perhaps production.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox.errors import ServerUnreachable
from pytest_pgsandbox.errors import UnsafeOperation

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

# Databases every server has, that hold no application data.
MAINTENANCE_DATABASES = ("postgres", "template1")


def url_from_command(command: str, timeout: float, source: str) -> str:
    """Run ``command`` (no shell) and return the connection string it prints."""
    argv = shlex.split(command)
    shown = f"url_command {argv[0] if argv else command!r} ({source})"
    if not argv:
        raise ServerUnreachable(f"{shown} is empty: set it to a command that prints a URL.")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ServerUnreachable(
            f"{shown}: the program {argv[0]!r} was not found. Install it or give its full path; "
            "the command runs without a shell (for pipes use: sh -c '...')."
        ) from None
    except subprocess.TimeoutExpired:
        raise ServerUnreachable(
            f"{shown} did not finish within {timeout:g} s (start_timeout). Check that it "
            "does not wait for input, e.g. a login prompt: log in first, then run the tests."
        ) from None
    if done.returncode != 0:
        tail = [mask(line) for line in done.stderr.strip().splitlines()[-5:]]
        said = "\n".join(f"    {line}" for line in tail) or "    (nothing on stderr)"
        raise ServerUnreachable(
            f"{shown} failed with exit code {done.returncode}. It said:\n{said}\n"
            "  Run the command by hand to see what it needs (a login, a profile, a region)."
        )
    return parse_printed(done.stdout, shown)


def parse_printed(output: str, shown: str) -> str:
    """A connection string from a command's output: URL, key=value, or RDS JSON secret."""
    text = output.strip()
    if text.startswith("{"):
        try:
            secret = json.loads(text)
        except ValueError:
            secret = None
        if isinstance(secret, dict) and {"host", "username"} <= secret.keys():
            return rds_secret_url(secret)
    elif text.startswith(("postgresql://", "postgres://")) or "=" in text:
        return text.splitlines()[0].strip()
    # Never echo the output: it may well be a secret of another form.
    raise ServerUnreachable(
        f"{shown} printed {len(text)} characters that are neither a postgresql:// URL, a "
        "key=value connection string nor an RDS-format JSON secret (with host, port, "
        "username, password, dbname). Make it print one of these."
    )


def rds_secret_url(secret: dict[str, object]) -> str:
    """The URL of an RDS-format secret ``{"host", "port", "username", "password", "dbname"}``."""
    info = ConnInfo(
        host=str(secret["host"]),
        port=int(str(secret.get("port") or 5432)),
        user=str(secret["username"]),
        password=str(secret["password"]) if secret.get("password") is not None else None,
        dbname=str(secret.get("dbname") or "postgres"),
    )
    return info.url()


def is_local(host: str) -> bool:
    """A unix socket, localhost, or a loopback address."""
    if host == "" or host.startswith("/") or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(info: ConnInfo, allow_hosts: Sequence[str], source: str) -> None:
    """Refuse a server on another machine unless its host is in ``allow_hosts``."""
    if is_local(info.host) or "*" in allow_hosts or info.host.lower() in allow_hosts:
        return
    raise UnsafeOperation(
        f"refusing to use the PostgreSQL server at {mask(info.url())} ({source}): its host "
        f"{info.host!r} is not this machine, and a URL for another machine may well be a "
        "shared or production server. pgsandbox creates and drops databases there.\n"
        "  If this server is meant for tests (a CI service, a test instance), allow it: "
        f"--pg-allow-hosts={info.host} (or PGSANDBOX_ALLOW_HOSTS, pg_allow_hosts)."
    )


def check_database(conn: psycopg.Connection[TupleRow], info: ConnInfo) -> None:
    """Refuse a URL whose database holds tables that pgsandbox did not make."""
    from pytest_pgsandbox._engine.servers import provision

    if info.dbname in MAINTENANCE_DATABASES:
        return
    if provision.database_label(conn, info.dbname) is not None:
        return
    if provision.is_in_place(conn):  # tests run in it, as a role that may not create databases
        return
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT LIKE 'pg\\_%' "
        "AND n.nspname NOT IN ('information_schema', '_pgsandbox', 'pgsandbox_clock')"
    ).fetchone()
    tables = int(row[0]) if row else 0
    if tables == 0:
        return
    admin_url = mask(info.for_db("postgres").url())
    raise UnsafeOperation(
        f"refusing to use the URL {mask(info.url())}: its database {info.dbname!r} holds "
        f"{tables} table(s) that pgsandbox did not create, so it looks like an "
        "application's own database (perhaps production). pgsandbox never writes into the "
        "URL's database; it needs only a maintenance database to connect to, and creates "
        "labelled databases of its own beside it.\n"
        f"  Point the URL at the server's postgres database instead: {admin_url}"
    )
