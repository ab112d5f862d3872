"""Secrets at rest: Fernet tokens under a key derived from the service's secret key.

Webhook signing secrets (and store integrations' client secrets) must be readable by the
service, so they cannot be hashed like API keys; they are encrypted instead. The Fernet key
is derived with HKDF-SHA256 from ``SKUFORGE_SECRET_KEY`` and a *purpose* label, so each kind
of secret has its own key (a token made for one purpose does not decrypt under another) and
the service key itself never touches the data. Fernet authenticates as well as encrypts: a
tampered or foreign token is refused, never decrypted to garbage.

Changing ``SKUFORGE_SECRET_KEY`` makes the stored secrets unreadable; ``previous_keys``
(older service keys, tried in order after the current one) lets an operator rotate it and
re-encrypt at leisure.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Fixed, public salt: HKDF's salt only needs to be independent of the input key; the key
# material's own entropy (a 32+ character random service key in production) is what counts.
_SALT = b"skuforge/secret-box/v1"


class SecretDecryptionError(ValueError):
    """The token was not made by this service key (or was altered)."""

    code = "secret_undecryptable"


def derive_fernet_key(secret_key: str, purpose: str) -> bytes:
    """The urlsafe-base64 Fernet key for ``purpose`` under ``secret_key``."""
    if not purpose:
        raise ValueError("a secret box needs a purpose label")
    raw = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose.encode("utf-8")
    ).derive(secret_key.encode("utf-8"))
    return base64.urlsafe_b64encode(raw)


class SecretBox:
    """Encrypts and decrypts short text secrets for one purpose."""

    def __init__(self, secret_key: str, purpose: str, *, previous_keys: Sequence[str] = ()) -> None:
        keys = [secret_key, *previous_keys]
        self._fernet = MultiFernet([Fernet(derive_fernet_key(k, purpose)) for k in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise SecretDecryptionError(
                "a stored secret cannot be decrypted with this SKUFORGE_SECRET_KEY"
            ) from exc
