"""Ending a session for a reason of pgsandbox's, with one message, serial or under xdist."""

from __future__ import annotations

import pytest

FATAL = "pgsandbox_fatal"  # an xdist worker's reason to stop the session, for the controller
FATAL_KEY = pytest.StashKey[str]()


def stop_session(session: pytest.Session, message: str) -> None:
    """End the session with ``message`` and exit code 1 (the same under xdist)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is None:
        pytest.exit(message, 1)
    # In an xdist worker, pytest.exit reaches the user as an INTERNALERROR of the controller
    # that hides the message: the worker runs no test and hands the message on instead.
    workeroutput[FATAL] = message
    session.config.stash[FATAL_KEY] = message
    session.shouldfail = message  # the worker's loop ends after the test it is given first
