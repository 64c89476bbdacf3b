"""Tests that run as the application's own role, not as a superuser.

- The role (setting ``role``) is created before the schema is built, so that the schema's
  ``GRANT ... TO app`` works, unless it exists already. A role pgsandbox creates is labelled
  in its comment, like its databases.
- Each run gives a login role a fresh random password (derived from a secret of the run, so
  that every xdist worker of the run computes the same one); none is ever stored or printed.
- ``pg.url`` logs in as the role. ``pg.conn`` is the superuser's connection with ``SET ROLE``,
  so that pgsandbox can still put the database back after the test.
- Per worker (``role_per_worker``): a login role of its own, a member of the role (so it has
  the schema's grants), that may connect only to that worker's databases.
- A role that exists on a server that is not ours, and that pgsandbox did not create, is
  never changed: its password is unknown, so ``pg.url`` logs in as the superuser of the URL
  and becomes the role at once (``options=-c role=NAME``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox.errors import UnsafeOperation

Conn = psycopg.Connection[Any]
WORKER_ROLE = "worker-role"  # the label's kind: a per-worker role, dropped after its run
# The label's kind of the role a pytest-postgresql ``user=`` asks for (pytest_pgsandbox.postgresql).
COMPAT_ROLE = "postgresql-user"


@dataclass(frozen=True)
class Rights:
    """What the session's role may do on the server."""

    name: str
    superuser: bool
    createdb: bool

    @property
    def may_create_databases(self) -> bool:
        return self.superuser or self.createdb


def rights(conn: Conn) -> Rights:
    """The session's current role and its rights."""
    row = conn.execute(
        "SELECT rolname, rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if row is None:  # a role dropped under the session: it may do nothing
        return Rights(str(conn.info.user), False, False)
    return Rights(str(row[0]), bool(row[1]), bool(row[2]))


def label_of(conn: Conn, name: str) -> dict[str, Any] | bool | None:
    """The role's pgsandbox label; None if it has none; False if there is no such role."""
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s", (name,)
    ).fetchone()
    if row is None:
        return False
    return provision.parse_label(row[0])


def ensure(conn: Conn, name: str, label: dict[str, object]) -> None:
    """Create role ``name`` (no login yet, labelled) unless it exists."""
    if label_of(conn, name) is not False:
        return
    # Another worker may be first.
    with contextlib.suppress(psycopg.errors.DuplicateObject), conn.transaction():
        _create(conn, name, sql.SQL("NOLOGIN"), label)


def _create(conn: Conn, name: str, options: sql.Composable, label: dict[str, object]) -> None:
    """CREATE ROLE with ``options``, labelled as ours."""
    role = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE ROLE {} {}").format(role, options))
    label_text = sql.Literal(provision.make_label(label))
    conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(role, label_text))


def password(secret: str, name: str) -> str:
    """The run's password for role ``name`` (the same in every worker of the run)."""
    return hmac.new(secret.encode(), f"role {name}".encode(), hashlib.sha256).hexdigest()[:32]


# The passwords we set are random and long, so hash iterations add no safety, only
# milliseconds to every connection.
SCRAM_ITERATIONS = 64


def scram_verifier(password: str, *, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 secret PostgreSQL stores for ``password`` (RFC 5802 and 7677).

    Computed here, so that the password itself is never sent to the server, where statement
    logging (``log_statement``) or ``pg_stat_statements`` could keep it. Our passwords are
    ASCII, which SASLprep leaves as it is.
    """
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def set_password(conn: Conn, name: str, password: str, *, login: bool = False) -> None:
    """Give role ``name`` a password (as its SCRAM verifier), and LOGIN if asked."""
    conn.execute(
        sql.SQL("ALTER ROLE {} {}PASSWORD {}").format(
            sql.Identifier(name),
            sql.SQL("LOGIN " if login else ""),
            sql.Literal(scram_verifier(password)),
        )
    )


def _login(conn: Conn, name: str, secret: str) -> None:
    set_password(conn, name, password(secret, name), login=True)


@dataclass(frozen=True)
class TestRole:
    """Who the tests are: the role ``pg.conn`` sets, and how ``pg.url`` logs in."""

    name: str  # SET ROLE to this on the superuser's connection
    login: str | None  # the login role of pg.url; None: the superuser, with options
    secret: str
    own: bool  # a per-worker role that this session created (and drops)

    @property
    def only(self) -> str | None:
        """The role that alone may connect to this worker's databases (per worker)."""
        return self.name if self.own else None

    def info(self, admin_db: ConnInfo) -> ConnInfo:
        """How code under test connects to the database ``admin_db`` points at."""
        if self.login is None:
            return ConnInfo(
                admin_db.host,
                admin_db.port,
                admin_db.user,
                admin_db.password,
                admin_db.dbname,
                (*admin_db.options, ("options", f"-c role={self.name}")),
            )
        return ConnInfo(
            admin_db.host,
            admin_db.port,
            self.login,
            password(self.secret, self.login),
            admin_db.dbname,
            admin_db.options,
        )

    def set_role(self, local: bool = False) -> str:
        """``SET [LOCAL] ROLE`` to this role (its name was checked: lower-case letters,
        digits and underscores)."""
        return f'SET {"LOCAL " if local else ""}ROLE "{self.name}"'


_LOCK = int.from_bytes(hashlib.sha256(b"pgsandbox roles").digest()[:8], "big", signed=True)


def prepare(
    conn: Conn,
    name: str,
    *,
    secret: str,
    server_is_ours: bool,
    worker: str | None,
    label: dict[str, object],
) -> TestRole:
    """Make role ``name`` (and the worker's own, if ``worker``) ready to log in this run."""
    # Roles are the whole server's: workers changing them at once would collide.
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        ensure(conn, name, label)
        if worker is None:
            if not (server_is_ours or label_of(conn, name) is not None):
                return TestRole(name, None, secret, own=False)
            _login(conn, name, secret)
            return TestRole(name, name, secret, own=False)
        # The run's id in the name: runs at once on one server must not share (or drop)
        # each other's worker roles.
        mine = f"{name}_{worker}_{label.get('run', '')}"[:63].rstrip("_")
        found = label_of(conn, mine)
        if found is False:
            login = sql.SQL("LOGIN IN ROLE {}").format(sql.Identifier(name))
            _create(conn, mine, login, {**label, "kind": WORKER_ROLE})
        elif found is None:
            raise UnsafeOperation(
                f"the role {mine!r} exists and was not created by pgsandbox, so it will not "
                f"be used as worker {worker}'s role. Drop or rename it, or turn "
                "role_per_worker off."
            )
        _login(conn, mine, secret)
        return TestRole(mine, mine, secret, own=True)


def drop_own(conn: Conn, role: TestRole) -> None:
    """Drop a per-worker role this session created (what it still owns goes too)."""
    if role.own and label_of(conn, role.name) is not None:
        _drop(conn, role.name)


def _drop(conn: Conn, name: str) -> bool:
    ident = sql.Identifier(name)
    try:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
    except psycopg.Error:
        return False  # still used, e.g. by a kept database: the next gc tries again
    return True


def worker_roles(conn: Conn, kind: str = WORKER_ROLE) -> list[tuple[str, dict[str, Any]]]:
    """Per-worker roles pgsandbox created on this server (or those of another ``kind``,
    e.g. ``COMPAT_ROLE``), with their labels."""
    rows = conn.execute(
        "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles ORDER BY rolname"
    ).fetchall()
    found = [(name, provision.parse_label(comment)) for name, comment in rows]
    return [(name, lab) for name, lab in found if lab and lab.get("kind") == kind]


def drop_worker_role(conn: Conn, name: str) -> bool:
    """Drop a per-worker role left by a run that ended; False if it is still in use."""
    return _drop(conn, name)
