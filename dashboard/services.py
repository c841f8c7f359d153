"""What the dashboard app holds for its lifetime: config, engine, session factories, live-event broker, login throttle."""
from __future__ import annotations

from typing import Optional

import sqlalchemy as sa
from flask import Flask, current_app

from dashboard import db as dbmod
from dashboard.config import DashboardConfig
from dashboard.events import Broker
from dashboard.station_state import StationThresholds
from dashboard.stations import StationRules
from shared.log_limit import LogLimiter
from shared.throttle import FailureThrottle

EXT = "facemon"


class Services:
    """Built once in `create_app`, found through `services()` (kept in app.extensions)."""

    def __init__(self, config: DashboardConfig, engine: sa.Engine) -> None:
        self.config = config
        self.engine = engine
        self.sessions = dbmod.make_session_factory(engine)
        self.writer = dbmod.make_session_factory(engine, write=True)  # short write transactions only
        self.broker = Broker(config.sse_queue_size)
        offline_after = config.offline_after_s or float("inf")
        # a desk whose latest report is older than this is no longer taken as in session
        self.station_rules = StationRules(min(config.online_window_s, offline_after), StationThresholds(
            offline_after_s=offline_after, slow_fps=config.slow_fps))
        # viewer logins, per (address, account): exponential delay after sign_in_max_failures, never a lock
        self.log_limiter = LogLimiter(burst=5, period_s=60.0)  # refusals an attacker can cause: counted, not logged
        self.login_throttle = FailureThrottle(free=config.sign_in_max_failures, forget_s=config.sign_in_window_s)


def services(app: Optional[Flask] = None) -> Services:
    """The services of `app` (default: the app of the current request)."""
    return (app or current_app).extensions[EXT]
