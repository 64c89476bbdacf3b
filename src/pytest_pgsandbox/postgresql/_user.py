"""Who a ``postgresql_proc`` / ``postgresql_noproc`` fixture's tests are: its ``user`` and
``password``.

pytest-postgresql's ``user`` is the superuser its own server was made with. Here one server
serves the run, and its superuser is pgsandbox's, so a ``user`` other than the server's own
becomes a role of its own:

- made once per run, under a lock (xdist workers agree), labelled like pgsandbox's
  databases: ``LOGIN CREATEDB``, not a superuser, with the ``password`` given, else one
  derived from the run's secret (the same in every worker, never stored or printed);
- it owns the template ``load=`` builds (the loaders connect as it, so it owns what they
  create) and each test's database, so the tests may do anything an owner may;
- a role of that name that pgsandbox did not make is never changed: the ``password`` given
  (or libpq's own means, e.g. ``~/.pgpass``) is how the tests log in as it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import psycopg
from psycopg import sql

from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers import roles
from pytest_pgsandbox._engine.urls import ConnInfo

KIND = roles.COMPAT_ROLE  # the label's kind
_LOCK = int.from_bytes(
    hashlib.sha256(b"pgsandbox postgresql users").digest()[:8], "big", signed=True
)


@dataclass(frozen=True)
class Identity:
    """The role a proc fixture's client connections log in as."""

    user: str
    password: str | None = field(default=None, repr=False)
    # None: the server's own admin (nothing to own or hand over); else the role's name.
    owner: str | None = None

    def info(self, admin: ConnInfo, dbname: str) -> ConnInfo:
        """How to reach ``dbname`` as this identity (``admin``'s address and options)."""
        return ConnInfo(admin.host, admin.port, self.user, self.password, dbname, admin.options)


def admin_identity(admin: ConnInfo) -> Identity:
    return Identity(admin.user, admin.password)


def prepare(
    conn: psycopg.Connection[Any], name: str, password: str | None, *, secret: str, run: str
) -> Identity:
    """Role ``name`` ready to log in for this run (``conn``: the admin's, autocommit)."""
    wanted = password if password is not None else roles.password(secret, f"postgresql {name}")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        found = roles.label_of(conn, name)
        if found is None:  # not ours: never changed
            return Identity(name, password, owner=name)
        if not isinstance(found, dict) or found.get("run") != run:
            role = sql.Identifier(name)
            verb = "CREATE" if found is False else "ALTER"
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN CREATEDB NOSUPERUSER PASSWORD {}").format(
                    sql.SQL(verb), role, sql.Literal(roles.scram_verifier(wanted))
                )
            )
            label = provision.make_label({"kind": KIND, "run": run})
            conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(role, sql.Literal(label)))
    return Identity(name, wanted, owner=name)


def failure(name: str, exc: psycopg.Error, admin: ConnInfo) -> str:
    """What to say when role ``name`` could not be made ready."""
    return (
        f"could not make the role {name!r} (the user of a postgresql_proc/noproc fixture, or "
        f"--postgresql-user) ready for the tests: {str(exc).strip()}\n  pgsandbox creates it "
        f"(LOGIN CREATEDB, labelled) unless it exists, connected as {admin.user!r}; connect "
        "as a role with CREATEROLE, create the role yourself and give its password, or leave "
        "user unset to be the server's own user."
    )
