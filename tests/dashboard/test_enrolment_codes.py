"""Single-use enrolment codes: add-stations --codes, redeemed over HTTP by the edge's own client (what
`scripts/setup.sh edge --code` runs), refused once used or expired, exactly one winner among N at once; audited."""
from __future__ import annotations

import datetime as dt
import http.client
import json
import re
import stat
import subprocess
import sys
import threading

import pytest
import requests
import sqlalchemy as sa

from dashboard import enrolment_codes
from dashboard.__main__ import main
from dashboard.audit_models import AuditEntry
from dashboard.models import ApiToken
from dashboard.provisioning import EdgeSite
from dashboard.services import services
from shared.throttle import FailureThrottle
from shared.envfile import parse_env_file
from tests.conftest import REPO

RECOGNIZER_TOKEN = "room-recognizer-token-0123456789"
SITE = EdgeSite("10.0.0.5:8002", RECOGNIZER_TOKEN, "https://dash.lab")
CODE = re.compile(r"^  (desk-\d\d)  ([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})$", re.M)


def _redeem_cli(url: str, code: str, out) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "edge.enrolment_code", "--code", code, "--dashboard", url, "--out",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=60)


def _at_once(url: str, codes: list[str]) -> list[requests.Response]:
    """POST each code to the redeem endpoint from its own thread, all released at the same instant."""
    barrier = threading.Barrier(len(codes))
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def redeem(code: str) -> None:
        barrier.wait()
        r = requests.post(f"{url}/api/enrolment-codes/redeem", json={"code": code}, timeout=60)
        with lock:
            answers.append(r)

    workers = [threading.Thread(target=redeem, args=(c,)) for c in codes]
    for t in workers:
        t.start()
    for t in workers:
        t.join(90)
    return answers


def _audit(app, action: str) -> list[AuditEntry]:  # noqa: ANN001
    with services(app).sessions() as db:
        return list(db.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)))


def test_codes_from_add_stations_redeemed_once_by_the_edge(live_server, tmp_path, capsys):
    app = live_server.app
    db = services(app).config.database_url
    args = ["--db", db, "--log-level", "WARNING", "add-stations", "desk-01..desk-03", "--codes", "--recognizer",
            "10.0.0.5:8002", "--recognizer-token", RECOGNIZER_TOKEN, "--dashboard-url", "https://dash.lab"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    codes = dict(CODE.findall(printed))
    assert sorted(codes) == ["desk-01", "desk-02", "desk-03"] and len(set(codes.values())) == 3, printed
    assert "scripts/setup.sh edge --pi --code CODE --dashboard https://dash.lab" in printed
    with services(app).sessions() as s:  # only hashes: no code, no token in the database
        assert s.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 0
    # again for a desk with an open code: refused; both --out and --codes, or neither: refused
    assert main(args[:5] + ["desk-02"] + args[6:]) == 2 and "with an unused code: desk-02" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "x")]) == 2 and "either --out DIR" in capsys.readouterr().err

    out = tmp_path / "edge.env"
    r = _redeem_cli(live_server.url, codes["desk-02"].lower(), out)  # case and dashes do not matter
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{out}: desk-02: recognizer 10.0.0.5:8002, camera picamera, sign-in on")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    env = parse_env_file(out.read_text())
    assert env["FACEMON_EDGE_STATION"] == "desk-02" and env["FACEMON_EDGE_TOKEN"] == RECOGNIZER_TOKEN
    hdr = {"Authorization": f"Bearer {env['FACEMON_EDGE_DASHBOARD_TOKEN']}"}
    status = lambda desk: requests.post(f"{live_server.url}/api/stations/{desk}/status", json={},  # noqa: E731
                                        headers=hdr, timeout=10).status_code
    assert status("desk-02") == 200 and status("desk-01") == 403  # the desk's own token

    before = out.read_text()
    r = _redeem_cli(live_server.url, codes["desk-02"], out)  # a used code: refused, the file untouched
    assert r.returncode == 2 and "the enrolment code of desk-02 was already used at" in r.stderr
    assert "from 127.0.0.1" in r.stderr and "add-stations desk-02 --codes --replace" in r.stderr
    assert out.read_text() == before
    r = _redeem_cli(live_server.url, "ABCD-EFGH-JKMN", tmp_path / "n.env")
    assert r.returncode == 2 and "HTTP 404" in r.stderr and "not known to this dashboard" in r.stderr
    r = _redeem_cli(live_server.url, "0000-1111", tmp_path / "n.env")
    assert r.returncode == 2 and "HTTP 400" in r.stderr and "12 letters and digits" in r.stderr
    assert not (tmp_path / "n.env").exists()
    r = _redeem_cli("dash.lab", "ABCD-EFGH-JKMN", tmp_path / "n.env")
    assert r.returncode == 2 and "http:// or https://" in r.stderr

    # expired: refused with when, and its copy of the recognizer token is gone from the database
    with services(app).writer() as s:
        (old,) = enrolment_codes.issue(s, ["desk-09"], SITE, "test", ttl_h=1,
                                       now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2))
    r = _redeem_cli(live_server.url, old.code, tmp_path / "n.env")
    assert r.returncode == 2 and "HTTP 410" in r.stderr and "the enrolment code of desk-09 expired at" in r.stderr
    with services(app).sessions() as s:
        sites = dict(s.execute(sa.text("SELECT station_id, site FROM enrolment_codes")).all())
    assert sites["desk-09"] == "" and sites["desk-02"] == "" and RECOGNIZER_TOKEN in sites["desk-01"]  # open: kept
    with services(app).writer() as s:  # one that ran out untried: emptied at the next issue
        enrolment_codes.issue(s, ["desk-10"], SITE, "test", ttl_h=1,
                              now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2))
        enrolment_codes.issue(s, ["desk-11"], SITE, "test")
        sites = dict(s.execute(sa.text("SELECT station_id, site FROM enrolment_codes")).all())
    assert sites["desk-10"] == "" and RECOGNIZER_TOKEN in sites["desk-11"]
    # --replace voids desk-03's open code; the old one then says so
    assert main(args[:5] + ["desk-03"] + args[6:] + ["--replace"]) == 0
    r = _redeem_cli(live_server.url, codes["desk-03"], tmp_path / "n.env")
    assert r.returncode == 2 and "replaced by a newer one" in r.stderr

    assert [e.subject for e in _audit(app, "enrolment_code_redeemed")] == ["desk-02"]
    assert len(_audit(app, "enrolment_code_issued")) == 7
    assert sorted(e.detail for e in _audit(app, "enrolment_code_refused")) == ["expired", "unknown", "used", "voided"]


@pytest.mark.parametrize("threads", [16])
def test_one_code_redeemed_at_once_by_many_gives_one_file(live_server_db, threads):
    """N desks send the same code in the same instant, on each backend: exactly one gets a file and a token."""
    app = live_server_db.app
    services(app).code_throttle = FailureThrottle(free=1000)  # all 16 reach the database (the throttle: below)
    with services(app).writer() as s:
        (issued,) = enrolment_codes.issue(s, ["desk-07"], SITE, "test")
    answers = _at_once(live_server_db.url, [issued.code] * threads)
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] + [410] * (threads - 1), [(r.status_code, r.text[:200]) for r in answers]
    assert all("already used" in r.json()["error"] for r in answers if r.status_code == 410)
    with services(app).sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ApiToken).where(ApiToken.name == "desk-07")) == 1
    assert len(_audit(app, "enrolment_code_redeemed")) == 1
    assert len(_audit(app, "enrolment_code_refused")) == threads - 1


def test_guessed_codes_from_one_address_are_slowed_even_when_sent_at_once(live_server):
    """16 made-up codes in the same instant: as many are checked (and audited) as the free allowance, the rest are
    429 with Retry-After, unchecked; then the address waits. A real code from elsewhere is not slowed."""
    app = live_server.app
    free = services(app).config.sign_in_max_failures
    answers = _at_once(live_server.url, [enrolment_codes.new_code() for _ in range(16)])
    codes = sorted(r.status_code for r in answers)
    assert codes == [404] * free + [429] * (16 - free), codes
    assert all(int(r.headers["Retry-After"]) >= 1 and "too many unknown or mistyped" in r.json()["error"]
               for r in answers if r.status_code == 429)
    assert len(_audit(app, "enrolment_code_refused")) == free  # the audit grows by the allowance, not the flood
    with services(app).writer() as s:
        (issued,) = enrolment_codes.issue(s, ["desk-07"], SITE, "test")
    r = requests.post(f"{live_server.url}/api/enrolment-codes/redeem", json={"code": issued.code}, timeout=30)
    assert r.status_code == 429  # this address waits, even with a real code
    # the same code from another desk (another loopback address): served
    conn = http.client.HTTPConnection("127.0.0.1", int(live_server.url.rsplit(":", 1)[1]), timeout=30,
                                      source_address=("127.0.0.2", 0))
    conn.request("POST", "/api/enrolment-codes/redeem", json.dumps({"code": issued.code}),
                 {"Content-Type": "application/json"})
    answer = conn.getresponse()
    assert answer.status == 200 and json.loads(answer.read())["station_id"] == "desk-07"
    conn.close()
