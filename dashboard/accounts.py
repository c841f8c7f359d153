"""People's accounts: created or reset with a hashed password (werkzeug), and checked at login."""
from __future__ import annotations

import functools
import secrets
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from dashboard.models import ROLES, User, WebSession, utcnow
from shared.names import InvalidName, validate_name

MIN_PASSWORD_CHARS = 8


class AccountError(ValueError):
    """An account that cannot be saved as asked (bad name, short password, unknown role, missing identity)."""


def create_user(db: Session, username: str, password: str, role: str = "viewer", identity: Optional[str] = None) -> User:
    """Add an account, or reset the password, role (and identity) of an existing one.

    `identity`: the enrolled face name (known_faces/<identity>) a desk sign-in is checked against;
    required for evaluators, optional for staff and admins (then they sign in at a desk by password only).
    """
    if role not in ROLES:
        raise AccountError(f"role {role!r} must be one of {', '.join(ROLES)}")
    if identity:
        try:
            identity = validate_name(identity, "identity")
        except InvalidName as exc:
            raise AccountError(str(exc)) from None
    elif role == "evaluator":
        raise AccountError("an evaluator needs --identity: the enrolled face name their sign-in is checked against")
    username = username.strip()
    if not username or len(username) > 64:
        raise AccountError("username must be 1 to 64 characters")
    if not username.isprintable():
        raise AccountError("username must not contain control characters (newline, tab ...)")
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    user = db.scalar(sa.select(User).where(User.username == username))
    if user is None:
        user = User(username=username, created_at=utcnow())
        db.add(user)
    if user.id is not None:  # a new password (or role) ends every page session of the account
        db.execute(sa.delete(WebSession).where(WebSession.user_id == user.id))
    user.password_hash = generate_password_hash(password)
    user.role = role
    if identity or role == "evaluator":
        user.identity = identity
    db.commit()
    return user


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash of a random password with the current method, made once per process (same cost as a real one)."""
    return generate_password_hash(secrets.token_urlsafe(16))


def check_login(db: Session, username: str, password: str) -> Optional[User]:
    """The user when the password is right. One hash check whether or not the name exists, so the answer
    time does not tell a wrong name from a wrong password (it used to: 535 ms vs 272 ms)."""
    user = db.scalar(sa.select(User).where(User.username == username.strip()))
    ok = check_password_hash(user.password_hash if user is not None else _dummy_hash(), password)
    return user if ok and user is not None else None
