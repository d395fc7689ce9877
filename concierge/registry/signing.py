"""Webhook signing secrets and signatures (HMAC-SHA256 over ``"<timestamp>.<event_id>.<body>"``).

A sender signs like this (the same as `sign`)::

    X-Concierge-Timestamp: 1767225600
    X-Concierge-Event-Id:  evt_123
    X-Concierge-Signature: sha256=<hex HMAC-SHA256(secret, b"1767225600.evt_123." + body)>

The event id is inside the signature, so a captured delivery replayed under a fresh
``X-Concierge-Event-Id`` does not verify (and a replay under the same id is a duplicate).
A sender that puts the id in the JSON body (``{"id": …}``) instead of the header signs an
empty id: ``b"1767225600.." + body`` — the body, id included, is signed anyway.

The registry issues a secret at registration (`new_secret`); `concierge.registry.webhooks`
checks deliveries with `verify`. No other registry module is imported here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from concierge.errors import SignatureInvalid

__all__ = ["EVENT_ID_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "TOLERANCE_S", "check_headers",
           "new_secret", "sign", "verify"]

SIGNATURE_HEADER = "X-Concierge-Signature"
TIMESTAMP_HEADER = "X-Concierge-Timestamp"
EVENT_ID_HEADER = "X-Concierge-Event-Id"
TOLERANCE_S = 300
"""A signature older (or newer) than this many seconds is refused, so a captured request
cannot be replayed later under a fresh event id."""

def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + 256 random bits."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int | str, body: bytes, *, event_id: str = "") -> str:
    """The ``X-Concierge-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)
    with ``X-Concierge-Event-Id: event_id`` (empty when the id is in the body)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{event_id}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def check_headers(timestamp: str | None, signature: str | None, *, now: float,
                  tolerance: float = TOLERANCE_S) -> int:
    """What can be checked before the body is read: both headers present, the timestamp
    recent. Returns the timestamp; raises `SignatureInvalid`."""
    if not signature or not timestamp:
        raise SignatureInvalid(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
    if not signature.strip().startswith("sha256="):
        raise SignatureInvalid(f"{SIGNATURE_HEADER} must be sha256=<hex>")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureInvalid(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
    if abs(now - sent_at) > tolerance:
        raise SignatureInvalid(f"{TIMESTAMP_HEADER} is more than {tolerance:g} s from the server's clock")
    return sent_at


def verify(secret: str, timestamp: str | None, body: bytes, signature: str | None, *,
           now: float, event_id: str = "", tolerance: float = TOLERANCE_S) -> None:
    """Raise `SignatureInvalid` unless ``signature`` signs ``body`` and ``event_id`` at a recent
    ``timestamp``."""
    sent_at = check_headers(timestamp, signature, now=now, tolerance=tolerance)
    if not hmac.compare_digest(sign(secret, sent_at, body, event_id=event_id), (signature or "").strip()):
        raise SignatureInvalid("signature does not match the source's webhook secret")
