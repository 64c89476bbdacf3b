"""``pytest_pgsql.time``: :mod:`pytest_pgsandbox.pgsql.time` under pytest-pgsql's name."""

from pytest_pgsandbox.pgsql.time import *  # noqa: F403
from pytest_pgsandbox.pgsql.time import __all__ as __all__
