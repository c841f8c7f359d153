"""Station/service bearer tokens (only a SHA-256 is stored) and people's accounts (werkzeug hashes)."""
from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from dashboard.models import ROLES, TOKEN_KINDS, ApiToken, User, WebSession, utcnow
from shared.names import InvalidName, validate_name

MIN_TOKEN_CHARS = 24
MIN_PASSWORD_CHARS = 8


class AuthError(ValueError):
    """A credential that cannot be created as asked (too short, wrong kind, name taken)."""


@dataclass(frozen=True)
class Caller:
    """Who is posting: the token's station/service name and kind."""

    name: str
    kind: str

    def may_post_for(self, station_id: str) -> bool:
        return self.kind == "service" or self.name == station_id


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a fast hash is enough (no dictionary to guess from).
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: Session, name: str, kind: str = "station", token: Optional[str] = None) -> str:
    """Store a new token for a station or service and return it in clear (shown once)."""
    if kind not in TOKEN_KINDS:
        raise AuthError(f"kind {kind!r} must be one of {', '.join(TOKEN_KINDS)}")
    if token is None:
        token = secrets.token_urlsafe(32)
    elif len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
        raise AuthError(f"a given token must be at least {MIN_TOKEN_CHARS} printable characters without spaces")
    digest = hash_token(token)
    if db.scalar(sa.select(ApiToken.id).where(ApiToken.token_hash == digest)) is not None:
        raise AuthError("that token is already in use")
    db.add(ApiToken(name=name, kind=kind, token_hash=digest, created_at=utcnow()))
    db.commit()
    return token


def revoke_token(db: Session, token_id: int) -> bool:
    row = db.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    db.commit()
    return True


def caller_for(db: Session, authorization: Optional[str]) -> Optional[Caller]:
    """The caller of an `Authorization: Bearer <token>` header, or None when missing/unknown/revoked."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    row = db.scalar(sa.select(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)))
    return None if row is None else Caller(row.name, row.kind)


def create_user(db: Session, username: str, password: str, role: str = "viewer", identity: Optional[str] = None) -> User:
    """Add an account, or reset the password, role (and identity) of an existing one.

    `identity`: the enrolled face name (known_faces/<identity>) a desk sign-in is checked against;
    required for evaluators, optional for staff and admins (then they sign in at a desk by password only).
    """
    if role not in ROLES:
        raise AuthError(f"role {role!r} must be one of {', '.join(ROLES)}")
    if identity:
        try:
            identity = validate_name(identity, "identity")
        except InvalidName as exc:
            raise AuthError(str(exc)) from None
    elif role == "evaluator":
        raise AuthError("an evaluator needs --identity: the enrolled face name their sign-in is checked against")
    username = username.strip()
    if not username or len(username) > 64:
        raise AuthError("username must be 1 to 64 characters")
    if not username.isprintable():
        raise AuthError("username must not contain control characters (newline, tab ...)")
    if len(password) < MIN_PASSWORD_CHARS:
        raise AuthError(f"password must be at least {MIN_PASSWORD_CHARS} characters")
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
