"""Typed dashboard configuration: defaults, environment variables `FACEMON_DASHBOARD_*`, validation."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Mapping, Optional

from shared.config import ConfigError, env_settings
from shared.web_server import WebServerSettings

ENV_PREFIX = "FACEMON_DASHBOARD_"
DEFAULT_DB_URL = "sqlite:///var/dashboard.sqlite3"
MiB = 1024 * 1024


@dataclass(frozen=True)
class DashboardConfig:
    """Everything the dashboard process needs; every field can be set by `FACEMON_DASHBOARD_<NAME>`."""

    database_url: str = field(default=DEFAULT_DB_URL, metadata={"help": "SQLAlchemy URL (sqlite:///path, mysql+pymysql://..., postgresql+psycopg://...)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=5000, metadata={"help": "TCP port (0 picks a free one)"})
    secret_key: Optional[str] = field(default=None, metadata={"help": "session signing key; default: generated once and kept in the database"})
    max_body_bytes: int = field(default=5 * MiB, metadata={"help": "largest accepted request body in bytes (413 above)"})
    max_details_bytes: int = field(default=16 * 1024, metadata={"help": "largest alert 'details' JSON in bytes"})
    online_window_s: float = field(default=30.0, metadata={"help": "a station seen within this many seconds counts as online"})
    offline_after_s: float = field(default=15.0, metadata={"help": "a desk that had a session and is unreported this many seconds raises station_offline (0: never)"})
    slow_fps: float = field(default=2.0, metadata={"help": "a desk answered at fewer frames/s than this (camera working) is shown as overloaded"})
    sse_queue_size: int = field(default=256, metadata={"help": "events buffered per live-page subscriber before it is dropped"})
    sse_heartbeat_s: float = field(default=15.0, metadata={"help": "seconds between keep-alive comments on the event stream"})
    auto_upgrade: bool = field(default=True, metadata={"help": "run schema migrations when the app starts"})
    secure_cookies: bool = field(default=False, metadata={"help": "mark the session cookie Secure (behind HTTPS)"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    sign_in_max_failures: int = field(default=5, metadata={"help": "failed desk sign-ins per station or account within sign_in_window_s before 429 and a failed_sign_in alert"})
    sign_in_window_s: float = field(default=300.0, metadata={"help": "window of the sign-in failure limit, seconds"})
    enrol_ticket_ttl_s: float = field(default=3600.0, metadata={"help": "seconds an admin's desk sign-in may ask for enrol grants"})
    enrol_grant_ttl_s: float = field(default=60.0, metadata={"help": "seconds an enrol grant stays redeemable (single-use)"})
    password_checks_at_once: int = field(default=1, metadata={"help": "password hashes computed at once (each ~32 MiB, ~0.1 s of a core; one leaves the other cores serving); as many more wait, the rest get 429"})
    web_threads: int = field(default=16, metadata={"help": "requests served at once by the web server (each live page holds one)"})
    web_connection_limit: int = field(default=4000, metadata={"help": "open connections at most; beyond, the longest silent ones are closed"})
    web_idle_timeout_s: float = field(default=30.0, metadata={"help": "a connection silent this long (idle keep-alive, or nothing sent) is closed"})
    web_request_timeout_s: float = field(default=20.0, metadata={"help": "a request's headers and body must all arrive within this many seconds"})
    max_live_streams: int = field(default=8, metadata={"help": "live pages (event streams) at once; more are told to poll and retry later"})
    data_key_file: Optional[str] = field(default=None, metadata={"help": "file (0600) of the keys that seal encodings, photos and evidence at rest (facemon-dashboard data-key new); else env FACEMON_DATA_KEY; neither: stored unencrypted"})
    notice_version: str = field(default="2026-12-v1", metadata={"help": "version of the privacy notice shown before enrolment (docs/privacy.md), recorded with each Capture"})
    retention_evidence_days: float = field(default=30.0, metadata={"help": "days alert evidence images are kept (0: forever)"})
    retention_alerts_days: float = field(default=180.0, metadata={"help": "days alert rows are kept, with their events (0: forever)"})
    retention_review_days: float = field(default=30.0, metadata={"help": "days review-queue faces (crops, encodings) are kept (0: forever)"})
    retention_sign_in_failures_days: float = field(default=90.0, metadata={"help": "days failed sign-ins are kept (0: forever)"})
    retention_audit_days: float = field(default=730.0, metadata={"help": "days audit entries are kept (0: forever)"})
    retention_interval_s: float = field(default=3600.0, metadata={"help": "seconds between retention passes of the running dashboard (0: none)"})
    vacuum_interval_s: float = field(default=86400.0, metadata={"help": "seconds between compactions of the database after retention (VACUUM; 0: never)"})
    stop_grace_s: float = field(default=5.0, metadata={"help": "on SIGTERM, requests in service get this long to finish"})

    def __post_init__(self) -> None:
        if not self.database_url or "://" not in self.database_url:
            raise ConfigError(f"database_url {self.database_url!r} is not an SQLAlchemy URL such as sqlite:///var/dashboard.sqlite3")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} must be between 0 and 65535")
        if self.max_body_bytes < 64 * 1024:
            raise ConfigError(f"max_body_bytes {self.max_body_bytes} must be at least 65536")
        if not 256 <= self.max_details_bytes <= self.max_body_bytes:
            raise ConfigError("max_details_bytes must be between 256 and max_body_bytes")
        if self.online_window_s <= 0:
            raise ConfigError("online_window_s must be positive")
        if self.offline_after_s != 0 and not 5 <= self.offline_after_s <= 86400:
            raise ConfigError(f"offline_after_s {self.offline_after_s} must be 0 (off) or 5..86400 seconds")
        if not 0 <= self.slow_fps <= 120:
            raise ConfigError(f"slow_fps {self.slow_fps} must be 0..120 frames/s")
        if not 1 <= self.sse_queue_size <= 100_000:
            raise ConfigError("sse_queue_size must be between 1 and 100000")
        if not 0.05 <= self.sse_heartbeat_s <= 300:
            raise ConfigError("sse_heartbeat_s must be between 0.05 and 300 seconds")
        if self.secret_key is not None and len(self.secret_key) < 16:
            raise ConfigError("secret_key must be at least 16 characters")
        if not 1 <= self.sign_in_max_failures <= 1000 or not 1 <= self.sign_in_window_s <= 86400:
            raise ConfigError("sign_in_max_failures must be 1..1000 and sign_in_window_s 1..86400 seconds")
        if not 60 <= self.enrol_ticket_ttl_s <= 86400 or not 5 <= self.enrol_grant_ttl_s <= 3600:
            raise ConfigError("enrol_ticket_ttl_s must be 60..86400 and enrol_grant_ttl_s 5..3600 seconds")
        if not 1 <= self.password_checks_at_once <= 32:
            raise ConfigError("password_checks_at_once must be 1..32")
        if not 4 <= self.web_threads <= 256:
            raise ConfigError("web_threads must be 4..256")
        if not 1 <= self.max_live_streams <= self.web_threads - 3:
            raise ConfigError(f"max_live_streams must be 1..web_threads-3 ({self.web_threads - 3}): each live page holds "
                              "a thread and the others must stay free for requests")
        if not 16 <= self.web_connection_limit <= 100_000:
            raise ConfigError("web_connection_limit must be 16..100000")
        if not 1 <= self.web_idle_timeout_s <= 3600 or not 1 <= self.web_request_timeout_s <= 3600:
            raise ConfigError("web_idle_timeout_s and web_request_timeout_s must be 1..3600 seconds")
        if not 0 <= self.stop_grace_s <= 300:
            raise ConfigError("stop_grace_s must be 0..300 seconds")
        for name in ("retention_evidence_days", "retention_alerts_days", "retention_review_days",
                     "retention_sign_in_failures_days", "retention_audit_days"):
            if not 0 <= getattr(self, name) <= 3650:
                raise ConfigError(f"{name} must be 0 (keep forever) or up to 3650 days")
        if self.retention_evidence_days and self.retention_alerts_days and \
                self.retention_alerts_days < self.retention_evidence_days:
            raise ConfigError("retention_alerts_days must not be shorter than retention_evidence_days")
        if self.retention_interval_s != 0 and not 1 <= self.retention_interval_s <= 86400:
            raise ConfigError("retention_interval_s must be 0 (off) or 1..86400 seconds")
        if self.vacuum_interval_s != 0 and not 60 <= self.vacuum_interval_s <= 30 * 86400:
            raise ConfigError("vacuum_interval_s must be 0 (never) or 60..2592000 seconds")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log_level {self.log_level!r} must be DEBUG, INFO, WARNING or ERROR")

    def web_server(self) -> WebServerSettings:
        """The web server's bounds for this dashboard."""
        return WebServerSettings(
            host=self.host, port=self.port, threads=self.web_threads, connection_limit=self.web_connection_limit,
            idle_timeout_s=self.web_idle_timeout_s, request_timeout_s=self.web_request_timeout_s,
            # twice the app's own limit: a body a little too large gets the app's JSON 413 with the limit; a far
            # larger one is refused by the server from its Content-Length, unread
            max_body_bytes=2 * self.max_body_bytes, stop_grace_s=self.stop_grace_s, name="dashboard")

    def replace(self, **changes: object) -> "DashboardConfig":
        """A copy with some fields changed (validated again); None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None, **overrides: object) -> "DashboardConfig":
        """Defaults, then `FACEMON_DASHBOARD_*` variables, then non-None `overrides` (command-line flags)."""
        values = env_settings(cls, ENV_PREFIX, os.environ if env is None else env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)
