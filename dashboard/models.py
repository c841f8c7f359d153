"""Database schema (SQLAlchemy 2.x ORM). Times are stored as UTC; blobs live apart from the alert rows."""
from __future__ import annotations

import datetime as dt
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

UTC = dt.timezone.utc


class UTCDateTime(sa.types.TypeDecorator):
    """Aware datetime in Python, naive UTC in the database (microseconds kept on MySQL/MariaDB too)."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):  # noqa: ANN001 - SQLAlchemy hook
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value, dialect):  # noqa: ANN001
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):  # noqa: ANN001
        return None if value is None else value.replace(tzinfo=UTC)


# 64 KiB BLOB is too small for a JPEG on MySQL; LONGBLOB there, BYTEA on PostgreSQL, BLOB on SQLite.
Blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
from dashboard.sealed import Sealed  # noqa: E402 - after Blob, which migrations import from here
LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

TOKEN_KINDS = ("station", "service")
ROLES = ("viewer", "evaluator", "staff", "admin")
# viewer: dashboard only; evaluator: signs in at a desk (face-checked against `identity`), not on the dashboard;
# staff: the dashboard and any desk's page; admin: all of that plus tokens and enrolment at a desk
DASHBOARD_ROLES = ("viewer", "staff", "admin")


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Alert(Base):
    """One incident (alert_id), built from one or more delivered events in any order."""

    __tablename__ = "alerts"
    alert_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    station_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    login_name: Mapped[str] = mapped_column(sa.String(64), index=True, default="")
    type: Mapped[str] = mapped_column(sa.String(32), index=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    ended_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)
    details: Mapped[str] = mapped_column(LongText, default="{}")
    opened_seen: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)
    acknowledged_by: Mapped[Optional[str]] = mapped_column(sa.String(64), nullable=True)
    ack_comment: Mapped[Optional[str]] = mapped_column(sa.Text, nullable=True)
    evidence_purged_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def state(self) -> str:
        if self.acknowledged_at is not None:
            return "acknowledged"
        return "closed" if self.ended_at is not None else "open"


class AlertEvent(Base):
    """A delivered message; its primary key is the idempotency key."""

    __tablename__ = "alert_events"
    event_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    alert_id: Mapped[str] = mapped_column(sa.String(32), index=True)
    state: Mapped[str] = mapped_column(sa.String(16))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Evidence(Base):
    """A JPEG belonging to an alert: kind 'image' (at opening), 'best' (best frame) or 'thumb'."""

    __tablename__ = "evidence"
    alert_id: Mapped[str] = mapped_column(sa.String(32), sa.ForeignKey("alerts.alert_id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    data: Mapped[bytes] = mapped_column(Sealed("evidence"))  # sealed at rest when a data key is configured
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ApiToken(Base):
    """A bearer token for a station (posts only for itself) or a service (any station); only its hash is kept."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(64), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)


class StationStatus(Base):
    """Latest status a station (or its recognizer) reported."""

    __tablename__ = "station_status"
    station_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    fps: Mapped[Optional[float]] = mapped_column(sa.Float, nullable=True)
    recognizer_connected: Mapped[Optional[bool]] = mapped_column(sa.Boolean, nullable=True)
    login_name: Mapped[Optional[str]] = mapped_column(sa.String(64), nullable=True)
    faces: Mapped[Optional[int]] = mapped_column(sa.Integer, nullable=True)
    camera: Mapped[Optional[str]] = mapped_column(sa.String(16), nullable=True)  # ok | lost | unknown
    camera_error: Mapped[Optional[str]] = mapped_column(sa.String(200), nullable=True)
    degraded: Mapped[Optional[str]] = mapped_column(sa.String(200), nullable=True)  # shared.station_state codes, comma-joined
    last_connected: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)
    """The last report saying the desk had a session at a recognizer: "gone" is measured from here."""
    offline_alert_id: Mapped[Optional[str]] = mapped_column(sa.String(32), nullable=True)
    """The open station_offline alert, closed when the desk is back."""


class User(Base):
    """A person who may log in to the page; password stored as a werkzeug hash."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(256))
    role: Mapped[str] = mapped_column(sa.String(16), default="viewer")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    identity: Mapped[Optional[str]] = mapped_column(sa.String(64), nullable=True)
    """The enrolled face (known_faces/<identity>) a desk sign-in is checked against; required for evaluators."""


class SignInFailure(Base):
    """A failed desk sign-in (wrong password or failed face check), counted for rate limits and alerts."""

    __tablename__ = "sign_in_failures"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    username: Mapped[str] = mapped_column(sa.String(64), index=True)
    reason: Mapped[str] = mapped_column(sa.String(32))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class Setting(Base):
    """Small key/value settings kept with the data (the generated session key)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.Text)


class WebSession(Base):
    """A person's logged-in page session: the cookie holds a random id, only its SHA-256 is kept here.

    Logging out deletes the row, so the cookie is dead even if it was copied; a new password deletes every
    session of that account. Nothing in the cookie is derived from the password hash.
    """

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class DeskTicket(Base):
    """An admin's right to ask for enrol grants at one station, issued when they sign in there (hash only)."""

    __tablename__ = "desk_tickets"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    username: Mapped[str] = mapped_column(sa.String(64), index=True)
    station_id: Mapped[str] = mapped_column(sa.String(64))
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class EnrolGrant(Base):
    """A single-use grant to enrol one identity at one station, and its audit: who, when, where, outcome."""

    __tablename__ = "enrol_grants"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    admin: Mapped[str] = mapped_column(sa.String(64), index=True)
    station_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    identity: Mapped[str] = mapped_column(sa.String(64))
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)
    used_by: Mapped[Optional[str]] = mapped_column(sa.String(64), nullable=True)  # the recognizer's service name
    outcome: Mapped[Optional[str]] = mapped_column(sa.String(16), nullable=True)  # enrolled | refused | rejected
    reason: Mapped[Optional[str]] = mapped_column(sa.String(256), nullable=True)


class EnrolmentCode(Base):
    """A single-use, expiring code that a desk redeems for its edge env file (add-stations --codes); only its hash is
    kept. `site` holds what the file needs besides the station token (made at redemption) and is emptied once used."""

    __tablename__ = "enrolment_codes"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    code_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    station_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    site: Mapped[str] = mapped_column(sa.Text)  # JSON of dashboard.provisioning.EdgeSite; "" once used or voided
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)
    used_from: Mapped[Optional[str]] = mapped_column(sa.String(64), nullable=True)  # the redeeming address
    voided_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)  # replaced by a new code
