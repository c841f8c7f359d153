"""Desk sign-in with real parts: dashboard (real socket, SQLite file), recognizer (real sockets, dlib), edges
reading real clips, and a real headless Chromium for the page.

The account holder's clip must blink, and `samples/hamilton_clip.mp4` shows no clear blink, so the
"right person" case uses `../shared/data/spoof/video/real/apfol_real2.webm` (a live person who blinks
8 times in 8 s) with a test-only enrolment of that person from 4 frames of the same clip; those
tests skip when ../shared/data is absent. The stranger is Lin-Manuel Miranda in the bundled clip; the
still photo is `tests/fixtures/obama_probe.jpg` looped (`tests.clips.still_clip`).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Iterator

import cv2
import pytest
import requests
import sqlalchemy as sa
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from dashboard import accounts, station_tokens
from dashboard.models import Alert, Evidence
from dashboard.services import services
from edge.config import EdgeConfig
from edge.runtime import Edge
from tests.clips import still_clip
from tests.conftest import DATA, FIXTURES, KNOWN_FACES, SAMPLE_CLIP
from tests.dashboard.conftest import LiveServer, build_app

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]
TOKEN = "signin-recognizer-token"
PASSWORD = "a-long-enough-password"
HOLDER_CLIP = DATA / "spoof" / "video" / "real" / "apfol_real2.webm"
HOLDER = "apfol_person"  # test-only identity enrolled from the holder clip


def need_holder_clip() -> None:
    if not HOLDER_CLIP.exists():
        pytest.skip(f"{HOLDER_CLIP} not found (../shared/data is not shipped); the blinking-holder cases need it")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, engine) -> Iterator[dict]:
    from recognizer.alerting.outbox import OutboxConfig
    from recognizer.alerting.rules import AlertThresholds
    from recognizer.alerting.sinks import DashboardTarget
    from recognizer.app import RecognizerApp, RecognizerSettings
    from recognizer.vision.detect import EngineConfig
    from recognizer.identity.enrol import build_index
    from recognizer.identity.index import save_index
    from recognizer.server.stations import ServerConfig
    from recognizer.server.trust import TrustConfig

    tmp = tmp_path_factory.mktemp("signin")
    known = tmp / "known_faces"
    shutil.copytree(KNOWN_FACES, known)
    if HOLDER_CLIP.exists():
        (known / HOLDER).mkdir()
        cap = cv2.VideoCapture(str(HOLDER_CLIP))
        for i in range(200):
            ok, frame = cap.read()
            if ok and i % 50 == 0:
                cv2.imwrite(str(known / HOLDER / f"frame{i}.jpg"), frame)
    index, _ = build_index(engine, known)
    (tmp / "encodings").mkdir()
    save_index(index, tmp / "encodings")
    app = build_app(f"sqlite:///{tmp / 'dashboard.sqlite3'}")
    dashboard = LiveServer(app)
    with services(app).sessions() as db:
        service_token = station_tokens.create_token(db, "recognizer", "service")
    # the trust contract in full: each edge proves its station with its own token, enrolment needs grants
    rec = RecognizerApp(RecognizerSettings(
        engine=EngineConfig(detector="hog"),  # HOG only: no sweep process
        server=ServerConfig(host="127.0.0.1", port=0, token=TOKEN, idle_timeout_s=10, heartbeat_s=2),
        trust=TrustConfig(station_auth="dashboard", enrol_policy="grant"),
        dashboard=DashboardTarget(dashboard.url, service_token), status_interval_s=60,
        alerts=AlertThresholds(enabled=frozenset()), outbox=OutboxConfig(path=tmp / "outbox.sqlite3"),
        index_dir=tmp / "encodings", known_faces=known, workers=1))
    _, rec_port = rec.start()

    with services(app).sessions() as db:
        accounts.create_user(db, "eva", PASSWORD, "evaluator", identity=HOLDER)
        accounts.create_user(db, "barack", PASSWORD, "evaluator", identity="barack_obama")
        accounts.create_user(db, "sam", PASSWORD, "staff")
        accounts.create_user(db, "pat", PASSWORD, "staff")  # locked out by the wrong-password test
        accounts.create_user(db, "ada", PASSWORD, "admin")
    edges: list[Edge] = []

    def make_edge(source: Path, station: str, **cfg) -> Edge:
        # one desk at a time: earlier edges would share the recognizer's 2 cores and lower its frame
        # rate, and at a few frames per second short blinks fall between frames
        while edges:
            edges.pop().stop()
        with services(app).sessions() as db:
            token = station_tokens.create_token(db, station, "station")
        edge = Edge(EdgeConfig(source=str(source), recognizer_port=rec_port, station=station, token=TOKEN,
                               web_port=0, dashboard_url=dashboard.url, dashboard_token=token,
                               state_dir=str(tmp / station), **cfg))
        edge.start()
        edges.append(edge)
        return edge

    yield {"make_edge": make_edge, "app": app, "tmp": tmp, "rec": rec}
    for e in edges:
        e.stop()
    dashboard.stop()
    rec.stop()


def base(edge: Edge) -> str:
    return edge.url.replace("/video_feed_page", "")


def client(edge: Edge) -> tuple[requests.Session, str]:
    """A requests session that loaded /signin; returns it with its CSRF token."""
    s = requests.Session()
    page = s.get(base(edge) + "/signin", timeout=5).text
    return s, page.split('name="csrf-token" content="')[1].split('"')[0]


def sign_in(edge: Edge, username: str, password: str = PASSWORD) -> tuple[requests.Session, str, requests.Response]:
    s, csrf = client(edge)
    r = s.post(base(edge) + "/api/signin", json={"username": username, "password": password},
               headers={"X-CSRF-Token": csrf}, timeout=10)
    return s, csrf, r


def wait_progress(s: requests.Session, edge: Edge, timeout: float = 40) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = s.get(base(edge) + "/api/signin/progress", timeout=5).json()
        if body["state"] != "verifying":
            return body
        time.sleep(0.2)
    raise AssertionError(f"face check not decided in {timeout} s: {body}")


def wait_online(edge: Edge) -> None:
    deadline = time.time() + 20
    while not edge.link.online:
        assert time.time() < deadline, "edge did not connect to the recognizer"
        time.sleep(0.1)


def protected_answers(s: requests.Session, edge: Edge, csrf: str) -> list[int]:
    b = base(edge)
    return [
        s.get(b + "/video_feed", timeout=5, stream=True).status_code,
        s.get(b + "/api/status", timeout=5).status_code,
        s.post(b + "/api/capture", json={"name": "intruder"}, headers={"X-CSRF-Token": csrf}, timeout=5).status_code,
    ]


def test_holder_signs_in_bypass_impossible_then_signs_out(stack):
    """Right password + the holder's blinking clip: no session until the check passes; then monitoring names them."""
    need_holder_clip()
    edge = stack["make_edge"](HOLDER_CLIP, "desk-holder")
    wait_online(edge)
    s, csrf, r = sign_in(edge, "eva")
    assert r.status_code == 200 and r.json()["state"] == "verifying", r.text
    # the seeds' bypass: straight to the protected endpoints after the password step
    assert protected_answers(s, edge, csrf) == [401, 401, 401]
    assert s.get(base(edge) + "/video_feed_page", timeout=5, allow_redirects=False).status_code == 302
    assert edge.link.status()["login"] == ""  # no monitoring under that name yet
    # a forged cookie: the right key, the attempt id (or any id) presented as a session id
    serializer = SecureCookieSessionInterface().get_signing_serializer(edge.app)
    attempt = serializer.loads(s.cookies["facemon_edge"])["attempt"]
    for forged in ({"sid": attempt, "csrf": csrf}, {"sid": "x" * 43, "csrf": csrf}):
        f = requests.Session()
        f.cookies.set("facemon_edge", serializer.dumps(forged))
        assert protected_answers(f, edge, csrf) == [401, 401, 401]
    f = requests.Session()  # a cookie signed with another key is ignored
    other_app = Flask("forger")
    other_app.secret_key = "y" * 64
    other = SecureCookieSessionInterface().get_signing_serializer(other_app)
    f.cookies.set("facemon_edge", other.dumps({"sid": attempt}))
    assert f.get(base(edge) + "/api/status", timeout=5).status_code == 401

    body = wait_progress(s, edge)
    assert body["state"] == "signed_in", body
    assert body["progress"]["agreeing"] == 10 and body["progress"]["blinked"]
    status = s.get(base(edge) + "/api/status", timeout=5)
    assert status.status_code == 200 and status.json()["login"] == HOLDER
    # monitoring after sign-in names the evaluator (normal 1:N pipeline, login = their identity)
    deadline = time.time() + 30
    while not any(f.get("name") == HOLDER for f in s.get(base(edge) + "/api/status", timeout=5).json()["faces"]):
        assert time.time() < deadline, "monitoring never named the evaluator"
        time.sleep(0.3)
    deadline = time.time() + 5  # SESSION travels after the edge's own state changed
    while ("desk-holder", HOLDER) not in (stations := [(st.station, st.login) for st in stack["rec"].server.stations()]):
        assert time.time() < deadline, stations
        time.sleep(0.1)
    # an evaluator may watch their desk but not enrol
    assert s.post(base(edge) + "/api/capture", json={"name": "x"}, headers={"X-CSRF-Token": csrf},
                  timeout=5).status_code == 403
    assert s.post(base(edge) + "/api/signout", timeout=5).status_code == 403  # no CSRF token
    assert s.post(base(edge) + "/api/signout", headers={"X-CSRF-Token": csrf}, timeout=5).json()["ok"]
    assert edge.link.status()["login"] == ""  # the desk reports unattended
    assert s.get(base(edge) + "/api/status", timeout=5).status_code == 401


def test_stranger_refused_as_not_the_account_holder(stack):
    """Right password for eva, but the camera shows Lin-Manuel Miranda."""
    need_holder_clip()
    edge = stack["make_edge"](SAMPLE_CLIP, "desk-stranger")
    wait_online(edge)
    s, csrf, r = sign_in(edge, "eva")
    assert r.json()["state"] == "verifying"
    body = wait_progress(s, edge)
    assert body["state"] == "failed" and body["progress"]["reason"] == "not_account_holder", body
    assert body["progress"]["message"] == "not the account holder"
    assert protected_answers(s, edge, csrf) == [401, 401, 401]
    assert edge.link.status()["login"] == ""


def test_still_photo_refused_for_liveness(stack):
    """Right password + a looping photo of the account holder: every frame agrees, no blink: refused."""
    still = still_clip(FIXTURES / "obama_probe.jpg", stack["tmp"] / "still.mp4", 2, fps=15, width=640, noise=0)
    edge = stack["make_edge"](still, "desk-still", verify_timeout=6.0)
    wait_online(edge)
    s, csrf, r = sign_in(edge, "barack")
    assert r.json()["state"] == "verifying"
    body = wait_progress(s, edge, timeout=20)
    assert body["state"] == "failed" and body["progress"]["reason"] == "no_blink", body
    assert "blink" in body["progress"]["message"]
    assert protected_answers(s, edge, csrf) == [401, 401, 401]


def test_wrong_password_fifth_failure_raises_alert_then_limited(stack):
    edge = stack["make_edge"](SAMPLE_CLIP, "desk-pw")
    for i in range(5):
        s, csrf, r = sign_in(edge, "pat", f"wrong-password-{i}")
        assert r.status_code == 401 and r.json()["reason"] == "wrong_password"
        assert protected_answers(s, edge, csrf) == [401, 401, 401]
    s, csrf, r = sign_in(edge, "pat")  # even the right password now waits
    assert r.status_code == 429 and "too many" in r.json()["message"]
    with services(stack["app"]).sessions() as db:
        alerts = db.scalars(sa.select(Alert).where(Alert.station_id == "desk-pw")).all()
        assert [a.type for a in alerts] == ["failed_sign_in"]
        assert db.get(Evidence, (alerts[0].alert_id, "image")) is not None  # the camera frame at the 5th try


def test_roles_staff_watch_admin_enrols_and_is_recorded(stack):
    edge = stack["make_edge"](SAMPLE_CLIP, "desk-roles")
    wait_online(edge)
    s, csrf, r = sign_in(edge, "sam")  # staff without an enrolled face: password only, never the desk login
    assert r.status_code == 200 and r.json()["state"] == "signed_in"
    assert s.get(base(edge) + "/api/status", timeout=5).status_code == 200
    assert s.post(base(edge) + "/api/capture", json={"name": "x"}, headers={"X-CSRF-Token": csrf},
                  timeout=5).status_code == 403
    assert edge.link.status()["login"] == ""
    a, csrf_a, r = sign_in(edge, "ada")
    assert r.json()["state"] == "signed_in"
    resp = a.post(base(edge) + "/api/capture", json={"name": "new_person"}, headers={"X-CSRF-Token": csrf_a},
                  timeout=15)
    assert resp.status_code == 200, resp.text  # enrolled or refused for a reason (no face on this frame)
    assert "grant" not in resp.json()["reason"], resp.text  # the edge got a grant; the recognizer accepted it
    record = (stack["tmp"] / "desk-roles" / "enrolments.jsonl").read_text()
    assert '"by": "ada"' in record and '"name": "new_person"' in record
    with services(stack["app"]).sessions() as db:  # the central audit: who, where, which name, the outcome
        rows = db.execute(sa.text("SELECT admin, station_id, identity, used_by, outcome FROM enrol_grants")).all()
    assert [tuple(r)[:4] for r in rows] == [("ada", "desk-roles", "new_person", "recognizer")], rows
    assert rows[0][4] in ("enrolled", "refused") and rows[0][4] == ("enrolled" if resp.json()["ok"] else "refused")


@pytest.fixture(scope="module")
def browser(chromium) -> Iterator[object]:
    yield chromium


@pytest.mark.browser
def test_browser_holder_signs_in_and_stranger_is_refused(stack, browser):
    """The real page in headless Chromium: password form, face-check progress, the feed after passing."""
    need_holder_clip()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 40)
    edge = stack["make_edge"](SAMPLE_CLIP, "desk-browser-stranger")
    wait_online(edge)
    browser.get(base(edge) + "/video_feed_page")
    assert browser.current_url.endswith("/signin")
    browser.find_element(By.ID, "username").send_keys("eva")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "signin").click()
    wait.until(lambda d: "Refused" in d.find_element(By.ID, "signin-answer").text)
    assert "not the account holder" in browser.find_element(By.ID, "signin-answer").text

    edge = stack["make_edge"](HOLDER_CLIP, "desk-browser-holder")
    wait_online(edge)
    browser.get(base(edge) + "/signin")
    browser.find_element(By.ID, "username").send_keys("eva")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "signin").click()
    wait.until(lambda d: d.current_url.endswith("/video_feed_page"))
    wait.until(lambda d: d.find_element(By.ID, "login").text == HOLDER)
    assert browser.find_elements(By.ID, "capture") == []  # no Capture button for an evaluator
    browser.save_screenshot("/tmp/facemon-signin.png")
    browser.find_element(By.ID, "signout").click()
    wait.until(lambda d: d.current_url.endswith("/signin"))
    assert edge.link.status()["login"] == ""
