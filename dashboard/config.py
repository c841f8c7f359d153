"""Typed dashboard configuration: defaults, environment variables `FACEMON_DASHBOARD_*`, validation."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from typing import Mapping, Optional

from shared.config import ConfigError, check_fields, env_settings, parse_bool, setting_field, settings_of
from shared.web_server import WebServerSettings

ENV_PREFIX = "FACEMON_DASHBOARD_"
DEFAULT_DB_URL = "sqlite:///var/dashboard.sqlite3"
MiB = 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
F = setting_field


@dataclass(frozen=True)
class DashboardConfig:
    """Everything the dashboard process needs; every field is a setting declared once (`setting_field`: default,
    help, type, bounds), set by `FACEMON_DASHBOARD_<NAME>` (a few also by a flag of `facemon-dashboard serve`,
    whose help is generated from the same declaration: `flag_help`)."""

    database_url: str = F(DEFAULT_DB_URL, "SQLAlchemy URL (sqlite:///path, mysql+pymysql://..., postgresql+psycopg://...)")
    host: str = F("127.0.0.1", "address to listen on (0.0.0.0 for the whole network)")
    port: int = F(5000, "TCP port (0 picks a free one)", int, ge=0, le=65535)
    secret_key: Optional[str] = F(None, "session signing key, >= 16 characters", computed="generated once and kept in the database")
    max_body_bytes: int = F(5 * MiB, "largest accepted request body in bytes (413 above)", int, ge=64 * 1024)
    max_details_bytes: int = F(16 * 1024, "largest alert 'details' JSON in bytes", int, ge=256)
    online_window_s: float = F(30.0, "a station seen within this many seconds counts as online", float, gt=0)
    offline_after_s: float = F(15.0, "a desk that had a session and is unreported this many seconds raises station_offline (0: never)", float, ge=5, le=86400, zero_ok=True)
    slow_fps: float = F(2.0, "a desk answered at fewer frames/s than this (camera working) is shown as overloaded", float, ge=0, le=120)
    sse_queue_size: int = F(256, "events buffered per live-page subscriber before it is dropped", int, ge=1, le=100_000)
    sse_heartbeat_s: float = F(15.0, "seconds between keep-alive comments on the event stream", float, ge=0.05, le=300)
    auto_upgrade: bool = F(True, "run schema migrations when the app starts", parse_bool)
    secure_cookies: bool = F(False, "mark the session cookie Secure (behind HTTPS)", parse_bool)
    log_level: str = F("INFO", "DEBUG, INFO, WARNING or ERROR", str.upper, choices=LOG_LEVELS)
    sign_in_max_failures: int = F(5, "failed desk sign-ins per station or account within sign_in_window_s before 429 and a failed_sign_in alert", int, ge=1, le=1000)
    sign_in_window_s: float = F(300.0, "window of the sign-in failure limit, seconds", float, ge=1, le=86400)
    enrol_ticket_ttl_s: float = F(3600.0, "seconds an admin's desk sign-in may ask for enrol grants", float, ge=60, le=86400)
    enrol_grant_ttl_s: float = F(60.0, "seconds an enrol grant stays redeemable (single-use)", float, ge=5, le=3600)
    password_checks_at_once: int = F(1, "password hashes computed at once (each ~32 MiB, ~0.1 s of a core; one leaves the other cores serving); as many more wait, the rest get 429", int, ge=1, le=32)
    web_threads: int = F(16, "requests served at once by the web server (each live page holds one)", int, ge=4, le=256)
    web_connection_limit: int = F(4000, "open connections at most; beyond, the longest silent ones are closed", int, ge=16, le=100_000)
    web_idle_timeout_s: float = F(30.0, "a connection silent this long (idle keep-alive, or nothing sent) is closed", float, ge=1, le=3600)
    web_request_timeout_s: float = F(20.0, "a request's headers and body must all arrive within this many seconds", float, ge=1, le=3600)
    max_live_streams: int = F(8, "live pages (event streams) at once; more are told to poll and retry later", int, ge=1)
    data_key_file: Optional[str] = F(None, "file (0600) of the keys that seal encodings, photos and evidence at rest (facemon-dashboard data-key new); else env FACEMON_DATA_KEY; neither: stored unencrypted")
    notice_version: str = F("2026-12-v1", "version of the privacy notice shown before enrolment (docs/privacy.md), recorded with each Capture")
    review_max_queued_per_station: int = F(1000, "faces one desk may have waiting in the review queue; more are refused (429; an alert's face is then not queued, the alert is kept)", int, ge=1, le=1_000_000)
    retention_evidence_days: float = F(30.0, "days alert evidence images are kept (0: forever)", float, ge=0, le=3650)
    retention_alerts_days: float = F(180.0, "days alert rows are kept, with their events (0: forever)", float, ge=0, le=3650)
    retention_review_days: float = F(30.0, "days review-queue faces (crops, encodings) are kept (0: forever)", float, ge=0, le=3650)
    retention_sign_in_failures_days: float = F(90.0, "days failed sign-ins are kept (0: forever)", float, ge=0, le=3650)
    retention_audit_days: float = F(730.0, "days audit entries are kept (0: forever)", float, ge=0, le=3650)
    retention_interval_s: float = F(3600.0, "seconds between retention passes of the running dashboard (0: none)", float, ge=1, le=86400, zero_ok=True)
    vacuum_interval_s: float = F(86400.0, "seconds between compactions of the database after retention (VACUUM; 0: never)", float, ge=60, le=30 * 86400, zero_ok=True)
    stop_grace_s: float = F(5.0, "on SIGTERM, requests in service get this long to finish", float, ge=0, le=300)

    def __post_init__(self) -> None:
        object.__setattr__(self, "log_level", self.log_level.upper())
        check_fields(self)  # each field's bounds and choices, as declared above; here: values that go together
        if not self.database_url or "://" not in self.database_url:
            raise ConfigError(f"database_url {self.database_url!r} is not an SQLAlchemy URL such as sqlite:///var/dashboard.sqlite3")
        if self.max_details_bytes > self.max_body_bytes:
            raise ConfigError("max_details_bytes must be between 256 and max_body_bytes")
        if self.secret_key is not None and len(self.secret_key) < 16:
            raise ConfigError("secret_key must be at least 16 characters")
        if self.max_live_streams > self.web_threads - 3:
            raise ConfigError(f"max_live_streams must be 1..web_threads-3 ({self.web_threads - 3}): each live page holds "
                              "a thread and the others must stay free for requests")
        if self.retention_evidence_days and self.retention_alerts_days and \
                self.retention_alerts_days < self.retention_evidence_days:
            raise ConfigError("retention_alerts_days must not be shorter than retention_evidence_days")

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


def flag_help(name: str, fmt: str = "{help}{default} [env {env}]") -> str:
    """The --help text of the flag that sets field `name`: its declared help, default and variable."""
    s = next(s for s in settings_of(DashboardConfig) if s.dest == name)
    return s.help_line(ENV_PREFIX + name.upper(), fmt).replace("%", "%%")
