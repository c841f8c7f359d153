"""Trust decisions kept centrally: station credentials, admins' desk tickets, single-use enrol grants (the audit).

- A **station credential** is the station's own token (`add-station`, kind station): the recognizer asks
  `verify_station` whether a HELLO's station id and credential belong together.
- A **desk ticket** is issued to an admin when the dashboard accepts their password at a desk
  (`/api/auth/check`); it is bound to that admin and that station and expires (`enrol_ticket_ttl_s`).
  With it, and only with it, the station may ask for enrol grants.
- An **enrol grant** names the admin, the station and the identity, expires quickly (`enrol_grant_ttl_s`)
  and is burnt by its first redemption, whatever the answer; its row is the enrolment audit (who,
  when, where, which identity, outcome).

Only SHA-256 digests of tickets and grants are stored (they are 256-bit random strings).
"""
from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dashboard.models import ApiToken, DeskTicket, EnrolGrant, User, utcnow
from dashboard.station_tokens import hash_token

GRANT_REFUSALS = ("unknown_grant", "grant_used", "grant_expired", "wrong_station", "wrong_identity")


class GrantRefused(Exception):
    """A grant or ticket that does not give the right asked for; `code` is one of GRANT_REFUSALS or a ticket code."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class Redeemed:
    grant_id: int
    admin: str
    station_id: str
    identity: str
    issued_at: dt.datetime


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def verify_station(db: Session, station_id: str, credential: str) -> Optional[str]:
    """None when `credential` is an active station token of `station_id`; else the refusal reason."""
    if not credential:
        return "no station credential sent"
    row = db.scalar(sa.select(ApiToken).where(ApiToken.token_hash == hash_token(credential)))
    if row is None:
        return "unknown station credential"
    if row.revoked_at is not None:
        return "this station credential was revoked"
    if row.kind != "station" or row.name != station_id:
        return f"this credential does not belong to station {station_id!r}"
    return None


def issue_ticket(db: Session, username: str, station_id: str, ttl_s: float) -> str:
    """A new desk ticket for an admin at a station; returned in clear once."""
    ticket = secrets.token_urlsafe(32)
    now = utcnow()
    db.add(DeskTicket(token_hash=hash_token(ticket), username=username, station_id=station_id, issued_at=now,
                      expires_at=now + dt.timedelta(seconds=ttl_s)))
    db.commit()
    return ticket


def ticket_admin(db: Session, ticket: str, station_id: str) -> str:
    """The admin a desk ticket speaks for at `station_id`; GrantRefused when it is unknown, expired or not an admin's."""
    row = db.scalar(sa.select(DeskTicket).where(DeskTicket.token_hash == hash_token(ticket or "")))
    if row is None or row.station_id != station_id:
        raise GrantRefused("bad_ticket", "no valid admin sign-in at this station (sign in again as an admin)")
    if _aware(row.expires_at) <= utcnow():
        raise GrantRefused("ticket_expired", "the admin's sign-in at this station has expired; sign in again")
    user = db.scalar(sa.select(User).where(User.username == row.username))
    if user is None or user.role != "admin":
        raise GrantRefused("not_admin", f"{row.username!r} is no longer an admin")
    return user.username


def issue_grant(db: Session, admin: str, station_id: str, identity: str, ttl_s: float) -> tuple[str, EnrolGrant]:
    """A new single-use grant (returned in clear once) and its audit row."""
    grant = secrets.token_urlsafe(32)
    now = utcnow()
    row = EnrolGrant(token_hash=hash_token(grant), admin=admin, station_id=station_id, identity=identity,
                     issued_at=now, expires_at=now + dt.timedelta(seconds=ttl_s))
    db.add(row)
    db.commit()
    return grant, row


def redeem_grant(db: Session, grant: str, station_id: str, identity: str, used_by: str) -> Redeemed:
    """Burn the grant (atomically: a second redemption finds it used) and check it fits; GrantRefused if not.

    `db` must be a write session (SQLite: BEGIN IMMEDIATE), so two recognizers cannot both burn it.
    """
    digest = hash_token(grant or "")
    now = utcnow()
    burnt = db.execute(sa.update(EnrolGrant).where(EnrolGrant.token_hash == digest, EnrolGrant.used_at.is_(None))
                       .values(used_at=now, used_by=used_by[:64])).rowcount
    row = db.scalar(sa.select(EnrolGrant).where(EnrolGrant.token_hash == digest))
    if row is None:
        db.rollback()
        raise GrantRefused("unknown_grant", "the enrol grant is not one the dashboard issued")
    if not burnt:
        db.rollback()
        raise GrantRefused("grant_used", "the enrol grant was already used (grants are single-use)")
    refusal: Optional[GrantRefused] = None
    if _aware(row.expires_at) <= now:
        refusal = GrantRefused("grant_expired", "the enrol grant has expired; press Capture again")
    elif row.station_id != station_id:
        refusal = GrantRefused("wrong_station", f"the enrol grant was issued for station {row.station_id!r}")
    elif row.identity != identity:
        refusal = GrantRefused("wrong_identity", f"the enrol grant was issued for {row.identity!r}, not {identity!r}")
    if refusal is not None:
        row.outcome, row.reason = "rejected", refusal.reason[:256]
    db.commit()
    if refusal is not None:
        raise refusal
    return Redeemed(row.id, row.admin, row.station_id, row.identity, _aware(row.issued_at))


def record_outcome(db: Session, grant_id: int, used_by: str, ok: bool, reason: str) -> bool:
    """Store what the enrolment of a redeemed grant came to; False when that grant was not redeemed by `used_by`."""
    n = db.execute(sa.update(EnrolGrant).where(EnrolGrant.id == grant_id, EnrolGrant.used_by == used_by[:64],
                                               EnrolGrant.outcome.is_(None))
                   .values(outcome="enrolled" if ok else "refused", reason=reason[:256])).rowcount
    db.commit()
    return bool(n)


def enrolment_audit(db: Session, limit: int = 100) -> list[EnrolGrant]:
    """The newest grants first: issued, used or not, with their outcome."""
    return list(db.scalars(sa.select(EnrolGrant).order_by(EnrolGrant.issued_at.desc(), EnrolGrant.id.desc()).limit(limit)))
