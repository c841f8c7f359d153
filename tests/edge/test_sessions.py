"""Edge staff sessions expire (idle and absolute) and are kept bounded; tested with an injected clock against the
real dashboard on 127.0.0.1 (issue 15, item 7: they were still valid after 30 days, 1,002 kept after 1,000 sign-ins)."""
from __future__ import annotations

import pytest

from dashboard import accounts, station_tokens
from dashboard.services import services
from edge.auth import AuthSettings, DashboardClient, SignIn
from edge.config import ConfigError, load_config
from tests.dashboard.conftest import PASSWORD, LiveServer, build_app

pytestmark = pytest.mark.timeout(120)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class DeskLink:
    def __init__(self) -> None:
        self.logins: list[str] = []

    def set_login(self, login: str) -> None:
        self.logins.append(login)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    app = build_app(f"sqlite:///{tmp_path_factory.mktemp('dash') / 'dashboard.sqlite3'}")
    with services(app).writer() as db:
        token = station_tokens.create_token(db, "desk-01", "station")
        accounts.create_user(db, "sam", PASSWORD, "staff")
    server = LiveServer(app)
    yield server.url, token
    server.stop()
    services(app).close()


def make(dashboard, **settings) -> tuple[SignIn, Clock, DeskLink]:  # noqa: ANN001
    url, token = dashboard
    clock, link = Clock(), DeskLink()
    return SignIn(AuthSettings(station="desk-01", **settings), DashboardClient(url, token), link, clock=clock), clock, link


def sign_in(signin: SignIn) -> str:
    status, body = signin.password("sam", PASSWORD)
    assert status == 200 and body["state"] == "signed_in", body
    return body["sid"]


def test_idle_session_ends_and_use_keeps_it_alive(dashboard):
    signin, clock, _ = make(dashboard, session_idle_s=600, session_max_s=3600)
    sid = sign_in(signin)
    for _ in range(5):  # used every 9 minutes: alive for 45 minutes
        clock.now += 540
        assert signin.session(sid) is not None
    clock.now += 601  # then left alone past the idle time
    assert signin.session(sid) is None
    assert signin.session_count == 0


def test_absolute_limit_ends_a_session_in_constant_use(dashboard):
    signin, clock, _ = make(dashboard, session_idle_s=600, session_max_s=3600)
    sid = sign_in(signin)
    while clock.now < 1000 + 3600:
        assert signin.session(sid) is not None
        clock.now += 300
    assert signin.session(sid) is None


def test_defaults_suit_an_exam_day_and_30_days_later_nothing_is_valid(dashboard):
    signin, clock, _ = make(dashboard)
    assert signin.settings.session_idle_s == 1800 and signin.settings.session_max_s == 36000
    sid = sign_in(signin)
    clock.now += 30 * 86400  # the 30 days of simulated clock
    assert signin.session(sid) is None


def test_sessions_are_bounded_least_recently_used_first(dashboard):
    signin, clock, _ = make(dashboard, max_sessions=16)
    keep = sign_in(signin)
    sids = []
    for _ in range(60):  # the issue: 1,000 sign-ins kept 1,002 sessions (fewer here, each asks the dashboard)
        clock.now += 1
        assert signin.session(keep) is not None  # used all along: never the least recently used
        sids.append(sign_in(signin))
    assert signin.session_count == 16
    assert signin.session(keep) is not None and signin.session(sids[-1]) is not None
    assert signin.session(sids[0]) is None


def test_the_desk_evaluator_session_expiring_leaves_the_desk_unattended(dashboard):
    signin, clock, link = make(dashboard, session_idle_s=600, session_max_s=3600)
    sid = signin._new_session("eva", "evaluator", "lin_manuel_miranda", desk=True)
    assert link.logins == ["lin_manuel_miranda"] and signin.desk() is not None
    clock.now += 601
    assert signin.desk() is None and link.logins[-1] == ""  # monitoring no longer expects her face
    assert signin.session(sid) is None


def test_session_limits_by_flag_and_environment():
    cfg = load_config(["--session-idle", "900", "--max-sessions", "10"], {"FACEMON_EDGE_SESSION_MAX": "28800"})
    assert (cfg.session_idle, cfg.session_max, cfg.max_sessions) == (900, 28800, 10)
    with pytest.raises(ConfigError, match="session idle"):
        load_config(["--session-idle", "7200", "--session-max", "3600"], {})
    with pytest.raises(ConfigError, match="max viewers"):
        load_config(["--web-threads", "6", "--max-viewers", "5"], {})
