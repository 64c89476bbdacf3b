"""The worked examples of applications as they are usually written run as the docs say.

``examples/fastapi_sync_app``: a sync FastAPI + SQLModel + Alembic service whose engine is
made at import time from DATABASE_URL and whose env.py takes the URL from the app's settings;
its tests override the get_db dependency. ``examples/flask_app``: a Flask-SQLAlchemy +
Flask-Migrate app with a factory, built through ``flask:tasks_app:create_app``; its tests
point db at the test's database through public attributes only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_sync_fastapi_example(pytester: pytest.Pytester, runtime: Path) -> None:
    pytest.importorskip("sqlmodel")
    shutil.copytree(EXAMPLES / "fastapi_sync_app", pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pg-verify-isolation")
    result.assert_outcomes(passed=6)


def test_the_flask_example(pytester: pytest.Pytester, runtime: Path) -> None:
    pytest.importorskip("flask_migrate")
    shutil.copytree(EXAMPLES / "flask_app", pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pg-verify-isolation")
    result.assert_outcomes(passed=6)
    assert not (pytester.path / "instance").exists(), "the app's own SQLite file was made"
