"""Review-UI logins: password check, sessions, CSRF tokens and the failed-login limit.

A session is a random token in an HttpOnly, SameSite=Lax cookie (Secure outside
development); the database keeps only its SHA-256 (``web_sessions``), so a leaked table
opens no session. Each session has its own CSRF token, which every form and htmx request
must send back (form field ``csrf_token`` or header ``X-CSRF-Token``). The login form has
no session yet: it carries a double-submit token (a cookie and the same value in the form).

Failed logins are rows of ``login_failures`` keyed by the e-mail and by the client
address: more than ``MAX_FAILURES`` of either within ``FAILURE_WINDOW`` refuses further
attempts (429) until the oldest ages out, so guessing is slow across API processes too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service.passwords import verify_password
from service.review_auth import Reviewer
from storage.review import DECIDING_ROLES, LoginFailure, User, WebSession, find_user

SESSION_COOKIE = "skuforge_review"
LOGIN_CSRF_COOKIE = "skuforge_review_login"
SESSION_TTL = timedelta(hours=12)
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)


class UiError(Exception):
    """A refused UI request, rendered as a page with ``status``."""

    status = 400
    title = "Request refused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotLoggedInError(UiError):
    status, title = 401, "Please log in"


class CsrfError(UiError):
    status, title = 403, "Form expired or forged"


class ForbiddenError(UiError):
    status, title = 403, "Not allowed"


class TooManyAttemptsError(UiError):
    status, title = 429, "Too many failed logins"


class NotFoundError(UiError):
    status, title = 404, "Not found"


@dataclass(frozen=True)
class UiUser:
    id: str
    tenant_id: str
    email: str
    role: str
    csrf_token: str

    @property
    def can_decide(self) -> bool:
        return self.role in DECIDING_ROLES

    def reviewer(self) -> Reviewer:
        """The same actor the JSON API's decision logic takes."""
        return Reviewer(
            tenant_id=self.tenant_id,
            actor=f"user:{self.email}",
            label=self.email,
            user_id=self.id,
            can_decide=self.can_decide,
            is_admin=self.role == "admin",
        )


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def _failures(session: Session, subject: str) -> int:
    since = _now() - FAILURE_WINDOW
    count = session.scalar(
        select(func.count(LoginFailure.id)).where(
            LoginFailure.subject == subject, LoginFailure.at >= since
        )
    )
    return int(count or 0)


def log_in(session: Session, email: str, password: str, client: str) -> tuple[str, UiUser]:
    """A new session's cookie token and its user; raises TooManyAttemptsError or UiError.
    Runs in the caller's transaction, which must commit on failure too (the failure rows
    are the limit's memory)."""
    subjects = (f"email:{email.strip().lower()}", f"ip:{client}")
    if any(_failures(session, s) >= MAX_FAILURES for s in subjects):
        raise TooManyAttemptsError(
            "Too many failed logins for this address or account. Wait 15 minutes and try again."
        )
    user = find_user(session, email)
    # verify_password checks a dummy hash for an unknown address: same time either way
    if not verify_password(user.password_hash if user else None, password) or user is None:
        session.add_all(LoginFailure(subject=s) for s in subjects)
        session.flush()
        raise UiError("Unknown e-mail or wrong password.")
    session.execute(delete(LoginFailure).where(LoginFailure.subject == subjects[0]))
    token = new_token()
    row = WebSession(
        token_hash=_hash(token),
        user_id=user.id,
        csrf_token=new_token(),
        expires_at=_now() + SESSION_TTL,
    )
    session.add(row)
    session.flush()
    return token, UiUser(user.id, user.tenant_id, user.email, user.role, row.csrf_token)


def session_user(session: Session, token: str | None) -> UiUser | None:
    """The logged-in user of a cookie token, or None (unknown, expired or disabled)."""
    if not token:
        return None
    found = session.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.token_hash == _hash(token), User.disabled_at.is_(None))
    ).first()
    if found is None:
        return None
    web, user = found
    if _aware(web.expires_at) <= _now():
        return None
    return UiUser(user.id, user.tenant_id, user.email, user.role, web.csrf_token)


def log_out(session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == _hash(token)))
