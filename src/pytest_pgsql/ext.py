"""``pytest_pgsql.ext``: :mod:`pytest_pgsandbox.pgsql.ext` under pytest-pgsql's name."""

from pytest_pgsandbox.pgsql.ext import *  # noqa: F403
from pytest_pgsandbox.pgsql.ext import __all__ as __all__
