"""The interface every kind of server offers (kept free of heavy imports)."""

from __future__ import annotations

from typing import Protocol

from pytest_pgsandbox._engine.urls import ConnInfo


class PgServer(Protocol):
    """A running PostgreSQL server we may create databases on."""

    admin: ConnInfo
    startup_seconds: float

    @property
    def owns_cluster(self) -> bool:
        """True when the whole server is ours (a private local server)."""

    @property
    def outlives_session(self) -> bool:
        """True when the server goes on after this session (not ours, reusable, shared by
        xdist workers): what the session created there must be dropped."""

    @property
    def version(self) -> str: ...

    def describe(self) -> str: ...

    def check_alive(self, recheck: bool = False) -> None:
        """Raise ServerDied if the server is known to be gone.

        Cheap enough to call before every test; a server that must ask a daemon may answer
        from a look taken a moment ago, unless ``recheck`` (after an error) asks for a new one.
        """

    def stop(self) -> None: ...


def version_text(server_version: int) -> str:
    """libpq's ``server_version`` (150004) as PostgreSQL writes it (15.4)."""
    major, minor = divmod(server_version, 10000)
    return f"{major}.{minor}" if major >= 10 else str(server_version)
