from __future__ import annotations

from django.db import models


class Entry(models.Model):
    """Kept in the "audit" database (see project.routers)."""

    action = models.CharField(max_length=50)
    at = models.DateTimeField(auto_now_add=True)
