"""The public API: exactly what ``__all__`` names, sorted, and shown as the package's own."""

from __future__ import annotations

from types import ModuleType

import pytest_pgsandbox


def test_all_is_sorted_and_complete() -> None:
    public = {
        name
        for name in dir(pytest_pgsandbox)
        if name[0].isalpha() and not isinstance(getattr(pytest_pgsandbox, name), ModuleType)
    }
    assert pytest_pgsandbox.__all__ == sorted(pytest_pgsandbox.__all__)
    assert public - {"annotations"} == set(pytest_pgsandbox.__all__) - {"__version__"}


def test_classes_present_themselves_as_the_package() -> None:
    for name in pytest_pgsandbox.__all__:
        obj = getattr(pytest_pgsandbox, name)
        if isinstance(obj, type):
            assert obj.__module__ == "pytest_pgsandbox", name


def test_every_error_derives_from_the_base() -> None:
    for name in pytest_pgsandbox.__all__:
        obj = getattr(pytest_pgsandbox, name)
        if isinstance(obj, type) and issubclass(obj, Warning):
            # What isolation handled but the test's author should know: not an error.
            assert issubclass(obj, pytest_pgsandbox.PgSandboxWarning), name
        elif isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, pytest_pgsandbox.PgSandboxError), name
