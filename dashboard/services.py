"""What the dashboard app holds for its lifetime: config, engine, session factories, live-event broker, sign-in limits."""
from __future__ import annotations

import logging
from typing import Optional

import sqlalchemy as sa
from flask import Flask, current_app

from dashboard import db as dbmod
from dashboard.accounts import PasswordChecks
from dashboard.config import DashboardConfig
from dashboard.events import Broker
from dashboard.station_state import StationThresholds
from dashboard.review_index import QueueIndex
from dashboard.stations import StationRules
from shared.log_limit import RateLimitedLog
from shared.throttle import FailureThrottle, InFlight

EXT = "facemon"


class Services:
    """Built once in `create_app`, found through `services()` (kept in app.extensions)."""

    def __init__(self, config: DashboardConfig, engine: sa.Engine) -> None:
        self.config = config
        self.engine = engine
        self.sessions = dbmod.make_session_factory(engine)
        self.writer = dbmod.make_session_factory(engine, write=True)  # short write transactions only
        self.broker = Broker(config.sse_queue_size)
        self.review_index = QueueIndex()  # the review queue's encodings, for grouping (dashboard/review_index.py)
        offline_after = config.offline_after_s or float("inf")
        # a desk whose latest report is older than this is no longer taken as in session
        self.station_rules = StationRules(min(config.online_window_s, offline_after), StationThresholds(
            offline_after_s=offline_after, slow_fps=config.slow_fps))
        # viewer logins, per (address, account): exponential delay after sign_in_max_failures, never a lock;
        # a try is reserved before its password is checked, so tries sent at once get no more checks
        self.login_throttle = FailureThrottle(free=config.sign_in_max_failures, forget_s=config.sign_in_window_s)
        # desk checks (POST /api/auth/check), per (station, account): the checks under way, on top of the failures
        # the database holds (dashboard.sign_in_failures)
        self.desk_checks = InFlight(free=config.sign_in_max_failures)
        # enrolment codes (POST /api/enrolment-codes/redeem), per address: unknown or mistyped codes slow that
        # address down the same way (a guesser gets one try per 2 min; each refusal is audited, so bounded too)
        self.code_throttle = FailureThrottle(free=config.sign_in_max_failures, forget_s=config.sign_in_window_s)
        self.password_checks = PasswordChecks(config.password_checks_at_once)  # every password hash runs here
        self.refusals = RateLimitedLog(logging.getLogger("dashboard.signin"), "refused or failed sign-ins")
        # station credentials a recognizer was shown and this dashboard refused (made-up HELLOs): counted, not logged
        self.credential_refusals = RateLimitedLog(logging.getLogger("dashboard.trust_api"), "refused station credentials",
                                                  per_window=5)

    def close(self) -> None:
        """End live streams, the password workers and the database pool (server stop, tests)."""
        self.broker.close()
        self.password_checks.close()
        self.engine.dispose()


def services(app: Optional[Flask] = None) -> Services:
    """The services of `app` (default: the app of the current request)."""
    return (app or current_app).extensions[EXT]
