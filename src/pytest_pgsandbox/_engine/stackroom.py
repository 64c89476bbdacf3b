"""Run long Python work (a template's migrations) where CPython's frame stack has room.

Since 3.11, CPython keeps the frames of Python calls in a per-thread stack of chunks (16 KiB
for most of them). A call that does not fit in the current chunk maps a new one, and
returning from the first frame of a chunk unmaps it again at once. Work whose call depth
goes up and down across a chunk's end, millions of times, as Django's migration state
rendering does, then maps and unmaps 16 KiB thousands of times a second: measured on a large
project under pytest, a quarter of the process's CPU time went to the kernel (page faults of
ever-new pages), and where that boundary falls depends only on how deep the caller already
is. pytest-pgsandbox builds templates from deep inside a session's set-up, so it would hit
that at random.

``with_room(fn)`` calls ``fn`` from a frame big enough that CPython gives it a chunk of its
own with ample space left after it: the calls beneath stay in that chunk (up to about 128
KiB of frames, some hundreds of calls deep) however they come and go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import TypeVar

T = TypeVar("T")

# Stack slots of the roomy frame (8 bytes each): with CPython's overhead just above 128
# KiB, so the chunk it needs is the next power of two (256 KiB) and nearly half stays free.
# A larger co_stacksize than the code needs is only unused space.
_WORDS = 16 * 1024


def _room(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    return fn(*args, **kwargs)


_room.__code__ = _room.__code__.replace(co_stacksize=_WORDS)


def with_room(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, called from a frame that has a stack chunk to itself."""
    return _room(fn, args, kwargs)
