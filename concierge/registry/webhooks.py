"""Webhooks for a user_mcp source: a signing secret per source, signature checks, a rate cap and
replay protection.

    issue at register   `new_secret()` is stored in the vault at ``user_mcp/<id>/webhook`` in the
                        registration's transaction and returned ONCE (`models.RegisteredOutcome`)
    rotate              `Webhooks.rotate` replaces it and returns the new one, once
    revoke / delete     the registry deletes every vault key under ``user_mcp/<id>/``
    receive             `Webhooks.admit` (before the body is read): source known and live, the
                        signature and timestamp headers present, the timestamp within
                        `TOLERANCE_S`, the event id header short enough -> the body, read up to
                        `MAX_BODY_BYTES` (413 beyond, unread) -> `Webhooks.accept`: signature
                        (HMAC-SHA256 over ``"<timestamp>.<event_id>.<body>"``) -> paused? -> an
                        event id seen before is acknowledged as ``duplicate`` and not stored
                        again -> the source's ``webhook_rate_cap_per_minute`` -> stored

How a sender signs: `concierge.registry.signing`. This module depends on the service
(`Registry`); the service never imports it (it issues secrets through ``signing``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from concierge.errors import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    SourceInactive,
    ValidationFailed,
)
from concierge.registry.keyset import mapped
from concierge.registry.models import SourceStatus
from concierge.registry.pages import Page, check_limit
from concierge.registry.ratelimit import RateLimiter, StoreRateLimiter
from concierge.registry.signing import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    TOLERANCE_S,
    check_headers,
    new_secret,
    sign,
    verify,
)
from concierge.registry.source_rows import SourceRows
from concierge.registry.vault import webhook_key
from concierge.registry.webhook_rows import WebhookEventRows

if TYPE_CHECKING:
    from concierge.registry.service import Registry

__all__ = [
    "Admission",
    "EVENT_ID_HEADER",
    "MAX_BODY_BYTES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE_S",
    "WebhookEvent",
    "WebhookReceipt",
    "WebhookSecret",
    "Webhooks",
    "new_secret",
    "sign",
    "verify",
]

MAX_BODY_BYTES = 256 * 1024
MAX_EVENT_ID = 200


class WebhookSecret(BaseModel):
    data_source_id: str
    webhook_secret: str = Field(description="The new signing secret. Shown once; store it now.")
    detail: str


class WebhookReceipt(BaseModel):
    status: Literal["stored", "duplicate"]
    event_id: str
    data_source_id: str


class WebhookEvent(BaseModel):
    id: int
    source_id: str
    event_id: str
    received_at: str
    content_type: str | None
    payload: Any


@dataclass(frozen=True)
class Admission:
    """A delivery whose headers passed: what checking its body needs."""

    source_id: str
    name: str
    status: str
    rate_cap: int
    secret: str = field(repr=False)
    timestamp: str
    signature: str
    event_id: str | None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name) or headers.get(name.lower())
    return value.strip() if value else None


class Webhooks:
    """Receives, rate-caps, deduplicates and stores webhook events; rotates signing secrets."""

    def __init__(self, registry: Registry, *, limiter: RateLimiter | StoreRateLimiter | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self._sources = SourceRows(registry.store)
        self._events = WebhookEventRows(registry.store)
        self.limiter = limiter or StoreRateLimiter(registry.store, "webhooks")
        self._clock = clock
        registry.on_source_change(self._on_source_change)

    def _on_source_change(self, source_id: str, action: str) -> None:
        # Revoke must evict the webhook bucket (reference); update/pause/delete start afresh too.
        # (Shared buckets are dropped by the registry in the changing transaction itself.)
        if action in ("update", "pause", "revoke", "delete") and not isinstance(self.limiter, StoreRateLimiter):
            self.limiter.evict(source_id)

    def rotate(self, source_id: str, *, sandbox: str | None = None) -> WebhookSecret:
        """Replace the source's signing secret; the old one stops working at once."""
        source = self.registry.get_source(source_id, sandbox=sandbox)
        if source.status == SourceStatus.DISCONNECTED:
            raise Conflict(f"source {source_id} is revoked (disconnected); it has no webhook endpoint")
        secret = new_secret()
        with self.registry.store.transaction() as cx:
            self.registry.vault.put(cx, webhook_key(source_id), secret)
            self.registry._audit(cx, action="source.webhook_secret_rotate", object_type="source",
                                 object_id=source_id, sandbox_id=source.sandbox_id,
                                 after={"webhook_secret": "rotated"})
        return WebhookSecret(data_source_id=source_id, webhook_secret=secret,
                             detail="webhook signing secret rotated; the previous one no longer works")

    def receive(self, source_id: str, *, body: bytes, headers: Mapping[str, str],
                content_type: str | None = None) -> WebhookReceipt:
        """Check and store one event. See the module docstring for the order of checks."""
        admission = self.admit(source_id, headers)
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"webhook body is over {MAX_BODY_BYTES} bytes", field="body")
        return self.accept(admission, body, content_type=content_type)

    def admit(self, source_id: str, headers: Mapping[str, str]) -> Admission:
        """The checks that need no body: a sender without the source's endpoint, the signature
        headers or a fresh timestamp is refused before a byte of its body is read."""
        row = self._sources.webhook_admission(source_id)
        secret = self.registry.vault.get(webhook_key(source_id)) if row else None
        if row is None or secret is None:  # unknown and revoked look the same to a sender
            raise NotFound(f"no webhook endpoint for source {source_id!r}")
        timestamp, signature = _header(headers, TIMESTAMP_HEADER), _header(headers, SIGNATURE_HEADER)
        check_headers(timestamp, signature, now=self._clock())
        event_id = _header(headers, EVENT_ID_HEADER)
        if event_id is not None and len(event_id) > MAX_EVENT_ID:
            raise ValidationFailed(f"event id is over {MAX_EVENT_ID} characters", field="event_id")
        return Admission(source_id=source_id, name=row["name"], status=row["status"],
                         rate_cap=row["webhook_rate_cap_per_minute"], secret=secret,
                         timestamp=str(timestamp), signature=str(signature), event_id=event_id)

    def accept(self, admission: Admission, body: bytes, *, content_type: str | None = None) -> WebhookReceipt:
        """Verify the signature over timestamp, event id and body, then store the event once."""
        source_id = admission.source_id
        verify(admission.secret, admission.timestamp, body, admission.signature, now=self._clock(),
               event_id=admission.event_id or "")
        if admission.status == SourceStatus.PAUSED:
            raise SourceInactive(f"source {admission.name} ({source_id}) is paused; resume it to receive events")
        payload, event_id = _parse(body, content_type)
        event_id = admission.event_id or event_id
        if not event_id:
            raise ValidationFailed(f"send an event id in {EVENT_ID_HEADER} (or an \"id\" in a JSON body)",
                                   field="event_id")
        if len(event_id) > MAX_EVENT_ID:
            raise ValidationFailed(f"event id is over {MAX_EVENT_ID} characters", field="event_id")
        if self._seen(source_id, event_id):
            return WebhookReceipt(status="duplicate", event_id=event_id, data_source_id=source_id)
        self.limiter.acquire(source_id, admission.rate_cap, label=f"{admission.name} webhooks")
        # A concurrent delivery of the same id may have won the insert: still only one row.
        stored = self._events.record(source_id, event_id, payload, content_type=content_type)
        status: Literal["stored", "duplicate"] = "stored" if stored else "duplicate"
        return WebhookReceipt(status=status, event_id=event_id, data_source_id=source_id)

    def _seen(self, source_id: str, event_id: str) -> bool:
        return self._events.seen(source_id, event_id)

    def page_events(self, source_id: str, *, sandbox: str | None = None, limit: int | None = None,
                    cursor: str | None = None) -> Page[WebhookEvent]:
        """One page of a source's stored events, newest first."""
        self.registry.get_source(source_id, sandbox=sandbox)
        page = self._events.page(source_id, limit=check_limit(limit), cursor=cursor)
        return mapped(page, lambda r: WebhookEvent(**r))


def _parse(body: bytes, content_type: str | None) -> tuple[Any, str | None]:
    """The payload to store (JSON when it parses, else text) and an ``id`` found in it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed("webhook body must be UTF-8 text or JSON", field="body") from None
    try:
        payload: Any = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        if content_type and "json" in content_type:
            raise ValidationFailed("webhook body is not valid JSON", field="body") from None
        return text, None
    event_id = payload.get("id") if isinstance(payload, dict) else None
    return payload, str(event_id) if isinstance(event_id, (str, int)) and str(event_id) else None

