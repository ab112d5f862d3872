"""Expiring signed download URLs: HMAC-SHA256 over (digest, tenant, expiry) with the secret key.

A signed URL lets someone without an API key download one asset until it expires; it names
the tenant so revoking a tenant's access (deleting its rows) also voids its links.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

# What "now" is for signing and checking links; a test moves it instead of sleeping.
clock: Callable[[], float] = time.time


def sign(secret: str, digest: str, tenant_id: str, expires: int) -> str:
    message = f"{digest}:{tenant_id}:{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_query(secret: str, digest: str, tenant_id: str, ttl_s: int) -> tuple[str, int]:
    expires = int(clock()) + ttl_s
    sig = sign(secret, digest, tenant_id, expires)
    return f"tenant={tenant_id}&expires={expires}&sig={sig}", expires


def verify(secret: str, digest: str, tenant_id: str, expires: int, sig: str) -> bool:
    if expires < clock():
        return False
    return hmac.compare_digest(sign(secret, digest, tenant_id, expires), sig)
