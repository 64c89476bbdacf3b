"""Names of the databases we create: unique per run and worker, within 63 bytes."""

from __future__ import annotations

import hashlib
import re
import secrets

MAX_IDENTIFIER = 63


def new_run_id() -> str:
    return secrets.token_hex(4)


def database_name(kind: str, run_id: str, worker: str = "main", *parts: str) -> str:
    """``pgsandbox_<kind>_<run>_<worker>[_<parts>]``, lower case, at most 63 bytes.

    Too long a name keeps its start and ends with a short hash of the whole, so it stays
    unique and recognisable.
    """
    raw = "_".join(["pgsandbox", kind, run_id, worker, *parts])
    name = re.sub(r"[^a-z0-9_]", "_", raw.lower())
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return name[: MAX_IDENTIFIER - 9] + "_" + digest
