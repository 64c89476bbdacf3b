"""The default fixtures of pytest-postgresql, on pytest-pgsandbox's engine.

Registered when the ``pytest_postgresql`` setting is on (``pg_pytest_postgresql = true``):
then a suite that uses ``postgresql`` or ``postgresql_proc`` without defining them gets
these, even when pytest-postgresql is installed too (these are registered after it).
"""

from __future__ import annotations

from pytest_pgsandbox.postgresql import factories

postgresql_proc = factories.postgresql_proc()
postgresql_noproc = factories.postgresql_noproc()
postgresql = factories.postgresql("postgresql_proc")
postgresql_async = factories.postgresql_async("postgresql_proc")
