"""Prefixed, time-ordered ids (``sb_``, ``ds_``, ``ag_`` ...): a ULID body in Crockford base32.

Ids made by one process only grow (the ULID spec's monotonic mode): within one millisecond the
next id is the last one plus one, so rows ordered by (created_at, id) keep the order they were
made in, and a keyset page never skips a row added after its cursor was taken.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = 0


def new_id(prefix: str) -> str:
    """``prefix_`` + 26 characters: 48 bits of milliseconds then 80 random bits (the last id
    plus one when the clock has not moved on)."""
    global _last
    with _lock:
        value = (int(time.time() * 1000) << _RANDOM_BITS) | int.from_bytes(os.urandom(10), "big")
        if value >> _RANDOM_BITS <= _last >> _RANDOM_BITS:  # same millisecond (or the clock stepped back)
            value = _last + 1
        _last = value
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"
