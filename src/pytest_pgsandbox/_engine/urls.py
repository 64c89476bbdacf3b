"""Connection parameters, libpq URLs, and masking passwords out of everything we print."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any
from urllib.parse import quote
from urllib.parse import urlencode

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

MASK = "***"


@dataclass(frozen=True)
class ConnInfo:
    """Where a server listens and who we are there. ``repr`` never shows the password."""

    host: str
    port: int
    user: str
    password: str | None = dataclasses.field(default=None, repr=False)
    dbname: str = "postgres"
    options: tuple[tuple[str, str], ...] = ()

    def for_db(self, dbname: str) -> ConnInfo:
        return dataclasses.replace(self, dbname=dbname)

    @property
    def is_socket(self) -> bool:
        return self.host == "" or self.host.startswith("/")

    def url(self, *, masked: bool = False, driver: str | None = None) -> str:
        """A libpq URL; with ``driver="psycopg"`` SQLAlchemy's ``postgresql+psycopg`` form."""
        if driver:
            plain = self.url(masked=masked)
            return plain.replace("postgresql://", f"postgresql+{driver}://", 1)
        auth = quote(self.user, safe="")
        if self.password is not None:
            auth += ":" + (MASK if masked else quote(self.password, safe=""))
        db = quote(self.dbname, safe="")
        query = list(self.options)
        if self.is_socket:
            where = [("host", self.host)] if self.host else []
            query = [*where, ("port", str(self.port)), *query]
            return f"postgresql://{auth}@/{db}?{urlencode(query, safe='/', quote_via=quote)}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        tail = f"?{urlencode(query, safe='/', quote_via=quote)}" if query else ""
        return f"postgresql://{auth}@{host}:{self.port}/{db}{tail}"

    def conninfo(self) -> str:
        """A libpq key=value string (contains the password: never print it)."""
        import psycopg.conninfo

        return psycopg.conninfo.make_conninfo("", **self.kwargs())

    def kwargs(self) -> dict[str, str]:
        """The connection parameters by libpq keyword."""
        out = dict(self.options)
        out.update(port=str(self.port), user=self.user, dbname=self.dbname)
        if self.host:
            out["host"] = self.host
        if self.password is not None:
            out["password"] = self.password
        return out

    @classmethod
    def from_conninfo(cls, conninfo: str) -> ConnInfo:
        """Parse a URL or key=value string; libpq's PG* variables fill in what is missing.

        Raises ``MalformedConnInfo`` (password masked) if libpq cannot read it, or if a port
        is not a number.
        """
        import psycopg.pq

        params = parse_conninfo(conninfo)
        # Resolve what is still missing the way libpq would (PGHOST, PGPORT, PGUSER, ...).
        defaults = {
            d.keyword.decode(): (d.val or d.compiled or b"").decode()
            for d in psycopg.pq.Conninfo.get_defaults()
        }

        def pick(key: str, fallback: str) -> str:
            value = params.get(key)
            if value is None or str(value) == "":
                value = defaults.get(key) or fallback
            return str(value)

        host = pick("host", "").split(",")[0]  # "" = libpq's own default socket folder
        port = check_port(pick("port", "5432").split(",")[0], "the port") or 5432
        user = pick("user", "postgres")
        password = params.get("password") or defaults.get("password") or None
        known = {"host", "hostaddr", "port", "user", "password", "dbname"}
        return cls(
            host=host,
            port=port,
            user=user,
            password=str(password) if password else None,
            dbname=pick("dbname", user),
            options=tuple(sorted((k, str(v)) for k, v in params.items() if k not in known)),
        )


class MalformedConnInfo(ValueError):
    """A URL or key=value string libpq cannot use; the message has no password."""


def parse_conninfo(text: str) -> dict[str, Any]:
    """libpq's reading of a URL or key=value string, every port checked to be a number."""
    import psycopg.conninfo

    try:
        params = dict(psycopg.conninfo.conninfo_to_dict(text))
    except psycopg.ProgrammingError as exc:
        raise MalformedConnInfo(mask(str(exc).strip())) from None
    for value in str(params.get("port") or "").split(","):
        check_port(value, "the port")
    return params


def check_port(text: str, what: str) -> int:
    """``text`` as a TCP port (0 if empty); MalformedConnInfo if it is not one."""
    text = text.strip()
    if not text:
        return 0
    if not text.isdigit() or not 0 < int(text) < 65536:
        # libpq would refuse it only when connecting; an unnoticed default would be worse.
        raise MalformedConnInfo(f"{what} {text!r} is not a number from 1 to 65535")
    return int(text)


# What pgsandbox's own sessions are called on the server (never a test's connections): a
# reset leaves them alone, since they hold none of a test's work.
APPLICATION_NAME = "pgsandbox"


def connect(
    info: ConnInfo, *, autocommit: bool = True, timeout: float = 60.0
) -> psycopg.Connection[TupleRow]:
    """One of pgsandbox's own connections (autocommit by default), which gives up after
    ``timeout`` seconds."""
    import psycopg

    return psycopg.connect(
        info.conninfo(),
        autocommit=autocommit,
        connect_timeout=max(1, round(timeout)),
        application_name=APPLICATION_NAME,
    )


_URL_PASSWORD = re.compile(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*:)([^@\s]*)(@)")
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


# SQL that sets a password (ALTER/CREATE ROLE ... [ENCRYPTED] PASSWORD '...'), as a server
# log with statement logging on shows it.
_SQL_PASSWORD = re.compile(r"(\bPASSWORD\s+)(E?'(?:[^'\\]|''|\\.)*'?)", re.IGNORECASE)


def mask(text: str) -> str:
    """Replace every password in URLs, key=value strings and SQL inside ``text``."""
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    text = _SQL_PASSWORD.sub(lambda m: m.group(1) + f"'{MASK}'", text)
    return _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
