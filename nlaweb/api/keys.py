"""API keys as values: `nla_<prefix>_<secret>`. The prefix (public, unique) finds the row; only a
sha256 of the whole key is stored and compared in constant time. A key has 190 bits of randomness,
so a fast hash is enough (no password stretching needed for it)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_SCHEME = "nla"
PREFIX_CHARS = 8
_SHAPE = re.compile(r"^nla_([0-9a-f]{8})_([A-Za-z0-9_-]{32})$")


@dataclass(frozen=True)
class NewKey:
    raw: str  # shown to its owner once, never stored
    prefix: str
    digest: str


def hash_key(raw: str) -> str:
    """Hex sha256 of the whole key."""
    return hashlib.sha256(raw.encode()).hexdigest()


def new_key() -> NewKey:
    prefix = secrets.token_hex(PREFIX_CHARS // 2)
    raw = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(24)}"
    return NewKey(raw, prefix, hash_key(raw))


def prefix_of(raw: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    match = _SHAPE.match(raw)
    return match.group(1) if match else None


def matches(raw: str, digest: str) -> bool:
    """Whether `raw` hashes to `digest`, compared in constant time."""
    return hmac.compare_digest(hash_key(raw), digest)
