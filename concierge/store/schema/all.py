"""Every migration set, in the order they are applied."""

from __future__ import annotations

from concierge.store.schema.http import HTTP
from concierge.store.schema.registry import REGISTRY
from concierge.store.schema.store import STORE

__all__ = ["ALL"]

ALL = (STORE, REGISTRY, HTTP)
