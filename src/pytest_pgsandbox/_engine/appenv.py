"""Environment variables made from a server's coordinates, for applications that read theirs.

The ``env`` setting is a list of ``NAME=TEMPLATE``; a template's placeholders are those of
``PLACEHOLDERS`` (``{host}``, ``{url}``...). They are set for the whole session, before
``conftest.py`` files are imported, and point at the template database while it is built.
"""

from __future__ import annotations

import contextlib
import os
import string
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence

from pytest_pgsandbox._engine.urls import MASK
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import mask

PLACEHOLDERS = ("host", "port", "user", "password", "dbname", "url", "async_url", "sync_url")


def placeholders_of(template: str) -> list[str]:
    """The placeholders a template uses; ValueError for a malformed one or an unknown name."""
    names = []
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            raise ValueError(field)
        names.append(field)
    return names


def values(info: ConnInfo, *, masked: bool = False) -> dict[str, str]:
    """Each placeholder's value for ``info``; the password in the clear unless ``masked``
    (never print unmasked ones)."""
    password = info.password or ""
    return {
        "host": info.host,
        "port": str(info.port),
        "user": info.user,
        "password": MASK if masked and password else password,
        "dbname": info.dbname,
        "url": info.url(masked=masked),
        "sync_url": info.url(masked=masked, driver="psycopg"),
        "async_url": info.url(masked=masked, driver="asyncpg"),
    }


def render(
    templates: Sequence[tuple[str, str]], info: ConnInfo, *, masked: bool = False
) -> dict[str, str]:
    """The variables ``templates`` make for ``info`` (passwords masked if ``masked``, also
    those written into a template)."""
    known = values(info, masked=masked)
    found = {name: template.format_map(known) for name, template in templates}
    if masked:
        found = {name: _masked(name, value) for name, value in found.items()}
    return found


def _masked(name: str, value: str) -> str:
    if any(word in name.upper() for word in ("PASSWORD", "SECRET", "PASS")) and value:
        return MASK
    return mask(value)


@contextlib.contextmanager
def applied(found: Mapping[str, str]) -> Iterator[None]:
    """``found`` in ``os.environ`` for the block; what was there before afterwards."""
    saved = {name: os.environ.get(name) for name in found}
    os.environ.update(found)
    try:
        yield
    finally:
        for name, before in saved.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
