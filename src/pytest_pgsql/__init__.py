"""``import pytest_pgsql`` for suites written for pytest-pgsql: pytest_pgsandbox.pgsql under
pytest-pgsql's name, with its modules (``database``, ``time``, ``ext``, ``errors``).

Shipped with pytest-pgsandbox so that moving over needs no change in the tests. Uninstall
pytest-pgsql first: both distributions install this package.
"""

from pytest_pgsandbox.pgsql import *  # noqa: F403
from pytest_pgsandbox.pgsql import __all__ as __all__
