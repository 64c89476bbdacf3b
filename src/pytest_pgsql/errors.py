"""``pytest_pgsql.errors``: :mod:`pytest_pgsandbox.pgsql.errors` under pytest-pgsql's name."""

from pytest_pgsandbox.pgsql.errors import *  # noqa: F403
from pytest_pgsandbox.pgsql.errors import __all__ as __all__
