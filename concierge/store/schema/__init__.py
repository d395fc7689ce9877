"""The migration sets, one per layer that owns tables.

``store``     the store's own shared-state tables (rate buckets, change feed, key-value)
``registry``  sandboxes, sources, agents, vault, audit, ingested results, the key check,
              tool pins, webhook events
``http``      the HTTP service: API keys, conversations

The registry's sync store (`concierge.registry.store.Store`) applies ``store`` and
``registry``; the HTTP layer applies ``http`` when it starts using a database. The
``registry`` and ``http`` sets hold the tables the old registry store made (its ``PRAGMA
user_version`` 1-5, adopted by their ``legacy`` maps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge._lazy import lazy_exports

if TYPE_CHECKING:
    from concierge.store.schema.all import ALL
    from concierge.store.schema.http import HTTP
    from concierge.store.schema.registry import REGISTRY
    from concierge.store.schema.store import STORE

__all__ = ["ALL", "HTTP", "REGISTRY", "STORE"]

_EXPORTS = {"ALL": "all", "HTTP": "http", "REGISTRY": "registry", "STORE": "store"}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
