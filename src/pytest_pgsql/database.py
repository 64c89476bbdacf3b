"""``pytest_pgsql.database``: :mod:`pytest_pgsandbox.pgsql.database` under pytest-pgsql's name."""

from pytest_pgsandbox.pgsql.database import *  # noqa: F403
from pytest_pgsandbox.pgsql.database import __all__ as __all__
