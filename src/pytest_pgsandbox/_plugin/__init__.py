"""The pytest layer: thin adapters over the engine's façade (``_engine.sandbox``).

``hooks`` (options, configuration, report header, xdist), ``fixtures`` (``pg`` and the
session fixtures), ``async_fixtures``, ``pgsql_fixtures`` (pytest-pgsql's), ``keys`` (what
is kept in the stash). The entry point ``pytest_pgsandbox.plugin`` re-exports the hooks.

May import: the engine, the package's public modules. The engine never imports this.
"""
