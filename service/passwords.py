"""Reviewer passwords: argon2id (argon2-cffi's defaults, RFC 9106's second recommended
parameter set), and the one-time passwords ``skuforge users create`` prints."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()
# Verified against when the e-mail is unknown, so a login takes as long either way and
# the response time does not tell which addresses have accounts.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def one_time_password() -> str:
    # 16 random bytes: typed once, from the terminal, then changed or kept by the person.
    return secrets.token_urlsafe(16)
