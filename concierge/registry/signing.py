"""Webhook signing secrets and signatures (HMAC-SHA256 over ``"<timestamp>.<body>"``).

A sender signs like this (the same as `sign`)::

    X-Concierge-Timestamp: 1767225600
    X-Concierge-Event-Id:  evt_123
    X-Concierge-Signature: sha256=<hex HMAC-SHA256(secret, b"1767225600." + body)>

The registry issues a secret at registration (`new_secret`); `concierge.registry.webhooks`
checks deliveries with `verify`. No other registry module is imported here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from concierge.errors import SignatureInvalid

__all__ = ["EVENT_ID_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "TOLERANCE_S", "new_secret",
           "sign", "verify"]

SIGNATURE_HEADER = "X-Concierge-Signature"
TIMESTAMP_HEADER = "X-Concierge-Timestamp"
EVENT_ID_HEADER = "X-Concierge-Event-Id"
TOLERANCE_S = 300
"""A signature older (or newer) than this many seconds is refused, so a captured request
cannot be replayed later under a fresh event id."""

def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + 256 random bits."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Concierge-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str | None, body: bytes, signature: str | None, *,
           now: float, tolerance: float = TOLERANCE_S) -> None:
    """Raise `SignatureInvalid` unless ``signature`` signs ``body`` at a recent ``timestamp``."""
    if not signature or not timestamp:
        raise SignatureInvalid(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureInvalid(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
    if abs(now - sent_at) > tolerance:
        raise SignatureInvalid(f"{TIMESTAMP_HEADER} is more than {tolerance:g} s from the server's clock")
    if not hmac.compare_digest(sign(secret, sent_at, body), signature.strip()):
        raise SignatureInvalid("signature does not match the source's webhook secret")
