"""Edge sign-in hardening against the real dashboard on 127.0.0.1: throttled, never locked; whoami tells only
the caller about themselves; a newline in a logged value cannot forge a log line."""
from __future__ import annotations

import io
import logging
import threading

import pytest

from dashboard import accounts, station_tokens
from dashboard.services import services
from edge.auth import AuthSettings, DashboardClient, SignIn
from edge.frames import LatestFrame
from edge.web import EdgeState, create_app
from shared.config import LOG_FORMAT, OneLineFormatter
from tests.dashboard.conftest import PASSWORD, LiveServer, build_app

pytestmark = pytest.mark.timeout(60)


class DeskLink:
    """The part of the recognizer link sign-in touches for accounts without a face check (records set_login)."""

    def __init__(self) -> None:
        self.logins: list[str] = []

    def set_login(self, login: str) -> None:
        self.logins.append(login)

    def status(self) -> dict:
        return {"online": False}


@pytest.fixture
def desk(tmp_path):
    sqlite_app = build_app(f"sqlite:///{tmp_path / 'dashboard.sqlite3'}")
    server = LiveServer(sqlite_app)
    with services(sqlite_app).sessions() as db:
        token = station_tokens.create_token(db, "desk-01", "station")
        accounts.create_user(db, "sam", PASSWORD, "staff")
        accounts.create_user(db, "ada", PASSWORD, "admin")
    link = DeskLink()
    signin = SignIn(AuthSettings(station="desk-01"), DashboardClient(server.url, token), link)
    yield signin, link
    server.stop()
    services(sqlite_app).broker.close()
    services(sqlite_app).engine.dispose()


def test_wrong_passwords_slow_that_account_only_nobody_is_locked_out(desk):
    signin, _ = desk
    assert [signin.password("sam", f"wrong-{i}")[0] for i in range(5)] == [401] * 5
    status, body = signin.password("sam", PASSWORD)
    assert status == 429 and "try again in" in body["message"]  # this account waits (5 s, doubling)
    status, body = signin.password("ada", PASSWORD)  # the admin at the same desk: not locked out
    assert status == 200 and body["state"] == "signed_in"


def test_whoami_answers_only_about_the_caller(desk):
    signin, link = desk
    signin._new_session("eva", "evaluator", "lin_manuel_miranda", desk=True)  # an evaluator at the desk
    assert link.logins == ["lin_manuel_miranda"]
    state = EdgeState(display=LatestFrame(), link=link, stop=threading.Event(), station="desk-01", auth=signin,
                      secret_key="k" * 40)
    app = create_app(state)
    anonymous = app.test_client().get("/api/whoami").json
    assert anonymous["signed_in"] is False and anonymous["desk"] is None and "eva" not in str(anonymous)
    staff = app.test_client()
    status, body = signin.password("sam", PASSWORD)
    with staff.session_transaction() as sess:
        sess["sid"] = body["sid"]
    me = staff.get("/api/whoami").json
    assert me["username"] == "sam" and me["desk"] == "eva"  # staff may watch this desk, so they are told


def test_newline_in_a_logged_value_cannot_forge_a_line():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    logger = logging.getLogger("test.forge")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        by = "ada\n2026-01-01 00:00:00,000 INFO    recognizer.identity.enrol: enrolled 'mallory'\x1b[2K"
        logger.info("capture for %r by %s: ok=%s", "kit", by, True)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("with a traceback")
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert "by ada\\n2026-01-01" in lines[0] and "\\x1b[2K" in lines[0] and lines[0].endswith("ok=True")
    assert lines[1].endswith("with a traceback") and lines[2].startswith("Traceback")  # tracebacks keep their lines
    assert not any("enrolled 'mallory'" in ln and "by ada" not in ln for ln in lines)
