"""Long Python work called deep in a stack: CPython (3.11+) maps and unmaps a frame-stack
chunk each time the call depth crosses a chunk's end; ``with_room`` gives the work a chunk
of its own. Counted with the process's minor page faults (each new chunk is new pages)."""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable
from functools import partial

import pytest

from pytest_pgsandbox._engine.stackroom import with_room

pytestmark = pytest.mark.skipif(
    sys.implementation.name != "cpython" or sys.version_info < (3, 11),
    reason="CPython keeps frames in chunks since 3.11",
)


def _down(k: int) -> int:
    return 0 if k == 0 else _down(k - 1)


def _oscillate(times: int = 2000) -> None:
    """Go 20 calls deeper and back, ``times`` times: a migration's state rendering, small."""
    for _ in range(times):
        _down(20)


def _at_depth(depth: int, fn: Callable[[], object]) -> object:
    return fn() if depth == 0 else _at_depth(depth - 1, fn)


def _faults(fn: Callable[[], object]) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _worst(work: Callable[[], object]) -> int:
    """The most page faults ``work`` costs, over 300 caller depths."""
    return max(_faults(partial(_at_depth, d, work)) for d in range(300))


def test_work_that_thrashes_at_some_depth_does_not_with_room() -> None:
    # Some caller depths put a chunk's end inside the oscillation: there every one of the
    # 2000 descents maps a new chunk (a page fault or more each).
    plain = _worst(_oscillate)
    if plain < 1000:
        pytest.skip(f"this Python does not unmap frame-stack chunks at once (worst {plain})")
    # With room, at no caller depth.
    assert _worst(partial(with_room, _oscillate)) < 100
    assert with_room(lambda a, b=0: a + b, 2, b=3) == 5
