"""The audit app lives in the "audit" database, everything else in "default"."""

from __future__ import annotations

from typing import Any

AUDIT = "audit"


class AuditRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return AUDIT if model._meta.app_label == AUDIT else None

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return AUDIT if model._meta.app_label == AUDIT else None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        if app_label == AUDIT:
            return db == AUDIT
        return db != AUDIT
