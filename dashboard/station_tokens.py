"""Station and service bearer tokens: created, revoked, and checked on each API request (only a SHA-256 is stored)."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dashboard.models import TOKEN_KINDS, ApiToken, utcnow

MIN_TOKEN_CHARS = 24


class TokenError(ValueError):
    """A token that cannot be created as asked (too short, wrong kind, already in use)."""


@dataclass(frozen=True)
class Caller:
    """Who is posting: the token's station/service name and kind."""

    name: str
    kind: str

    def may_post_for(self, station_id: str) -> bool:
        return self.kind == "service" or self.name == station_id


def hash_token(token: str) -> str:
    """The stored form of a random secret (station tokens, page session ids, enrol grants and tickets)."""
    # They are 256-bit random strings, so a fast hash is enough (no dictionary to guess from).
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: Session, name: str, kind: str = "station", token: Optional[str] = None) -> str:
    """Store a new token for a station or service and return it in clear (shown once)."""
    if kind not in TOKEN_KINDS:
        raise TokenError(f"kind {kind!r} must be one of {', '.join(TOKEN_KINDS)}")
    if token is None:
        token = secrets.token_urlsafe(32)
    elif len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
        raise TokenError(f"a given token must be at least {MIN_TOKEN_CHARS} printable characters without spaces")
    digest = hash_token(token)
    if db.scalar(sa.select(ApiToken.id).where(ApiToken.token_hash == digest)) is not None:
        raise TokenError("that token is already in use")
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


def valid_station_digests(db: Session, claims: list[tuple[str, str]]) -> list[bool]:
    """For each (station id, SHA-256 hex of a credential): whether it is an active station token of that station.

    One query for the lot (a recognizer re-checks every live session's credential every few seconds)."""
    digests = {d for _, d in claims}
    rows = db.execute(sa.select(ApiToken.token_hash, ApiToken.name).where(
        ApiToken.token_hash.in_(digests), ApiToken.revoked_at.is_(None), ApiToken.kind == "station")).all() if digests else []
    owner = {h: name for h, name in rows}
    return [owner.get(d) == station for station, d in claims]
