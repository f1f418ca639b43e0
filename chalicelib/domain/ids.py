"""Identifiers: minting time-sortable, URL-safe ids with a type prefix (e.g. `evr_01J…`), and the shape
of the ids clients choose (session ids)."""

from __future__ import annotations

import os
import re
import time

# Session ids are free-form slugs but must be URL-safe as they are: RFC 3986 unreserved
# characters only (so they never need percent-encoding in a path), starting with a letter or
# digit (no "." / ".." segments), at most 200 characters. UUIDs and rollout ids fit.
SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,199}$")

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as ULIDs use


def _b32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A ULID-shaped id: 48-bit millisecond time then 80 random bits, so ids sort by creation."""
    millis = int(time.time() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_b32(millis, 10)}{_b32(rand, 16)}"
