"""Whole demo on one machine: enrol the sample faces, start recognizer (:8002), dashboard (:5000) and an
edge (:8001) that plays the bundled clip as its camera; print the URLs; stop everything on Ctrl-C.

    scripts/demo.sh                      # what the README says
    scripts/demo.sh --seconds 60 --check # run unattended for 60 s and verify the feed names the enrolled
                                         # evaluator and the dashboard's alerts are about strangers only
"""
from __future__ import annotations

import argparse
import datetime
import http.cookiejar
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
log = logging.getLogger("demo")
ADMIN_PASSWORD = "facemon-demo"  # the dashboard wants at least 8 characters; a demo on loopback only


def wait_http(url: str, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    return False


def wait_port_line(path: Path, needle: str, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return True
        time.sleep(0.3)
    return False


def dashboard_alerts(base: str, username: str, password: str, since: str) -> list[dict]:
    """Log in to the dashboard like a person (form + CSRF token, session cookie) and read GET /api/alerts."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"{base}/login", timeout=10) as r:
        page = r.read().decode("utf-8", "replace")
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    form = urllib.parse.urlencode({"username": username, "password": password, "csrf_token": csrf}).encode()
    with opener.open(f"{base}/login", data=form, timeout=10):
        pass
    query = urllib.parse.urlencode({"per_page": 200, "from": since})
    with opener.open(f"{base}/api/alerts?{query}", timeout=10) as r:
        return json.load(r)["alerts"]


def check_alerts(work: Path, since: float) -> bool:
    """True when the dashboard holds the demo's alerts and none of them is about the enrolled evaluator.

    The clip's audience member (not enrolled) should raise unknown_face incidents; Lin (enrolled, the desk's
    login) must never be a stranger or a wrong person: every unknown_face must be a face nobody enrolled is
    near (distance beyond the 0.6 vote radius), and there must be no wrong_person.
    """
    since_iso = datetime.datetime.fromtimestamp(since, datetime.timezone.utc).isoformat(timespec="seconds")
    deadline = time.time() + 15
    alerts: list[dict] = []
    while time.time() < deadline:
        try:
            alerts = [a for a in dashboard_alerts("http://127.0.0.1:5000", "admin", ADMIN_PASSWORD, since_iso) if a["station_id"] == "demo-desk"]
        except (urllib.error.URLError, OSError, ValueError, IndexError, KeyError) as exc:
            log.info("dashboard not readable yet: %s", exc)
        if alerts:
            break
        time.sleep(1)
    kinds: dict[str, int] = {}
    for a in alerts:
        kinds[a["type"]] = kinds.get(a["type"], 0) + 1
    log.info("alerts on the dashboard: %s", ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "none")
    if not alerts:
        log.error("no alert reached the dashboard; see %s and %s", work / "recognizer.log", work / "dashboard.log")
        return False
    wrong = [a for a in alerts if a["type"] == "wrong_person"]
    near = [a for a in alerts if a["type"] == "unknown_face" and not (_distance(a) or 0) > 0.6]
    for a in wrong + near:
        log.error("alert about the enrolled evaluator? %s %s details=%s", a["type"], a["alert_id"], a.get("details"))
    return not wrong and not near


def _distance(alert: dict) -> float | None:
    details = alert.get("details") or {}
    if isinstance(details, str):
        details = json.loads(details or "{}")
    value = details.get("distance")
    return float(value) if isinstance(value, (int, float)) else None


def main() -> int:
    os.umask(0o077)  # the demo's folder holds a database of faces, the data key and logs: 0600 files, 0700 folders
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(REPO / "samples" / "hamilton_clip.mp4"), help="camera source for the edge")
    p.add_argument("--workdir", type=Path, default=REPO / "var" / "demo", help="where the demo keeps its state and logs")
    p.add_argument("--seconds", type=float, default=0, help="stop by itself after this long (0 = run until Ctrl-C)")
    p.add_argument("--check", action="store_true",
                   help="exit non-zero unless the feed named an enrolled face (and, with the dashboard, an alert arrived there)")
    p.add_argument("--no-dashboard", action="store_true", help="leave the dashboard out")
    p.add_argument("--host", default="127.0.0.1", help="address the web pages listen on (0.0.0.0 to show them on the LAN)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="[demo] %(message)s")

    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    token, dash_token = "demo-station-token", "demo-recognizer-service-token-0001"
    desk_token = "demo-desk-station-credential-0001"  # demo-desk's own token: proves its station id to the recognizer
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[tuple[str, subprocess.Popen]] = []
    started = time.time()

    def start(name: str, cmd: list[str]) -> subprocess.Popen:
        logfile = open(work / f"{name}.log", "w")
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append((name, proc))
        log.info("started %s (pid %d, log %s)", name, proc.pid, work / f"{name}.log")
        return proc

    def stop_all(*_: object) -> None:
        for name, proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        # one data key for the whole demo, made on its first run: encodings, photos, the outbox and evidence are
        # sealed at rest (docs/privacy.md); deleting the work folder deletes the key with the data
        key_file = work / "data.key"
        if not key_file.exists():
            subprocess.run([PY, "-m", "recognizer", "data-key", "new", "--out", str(key_file)], cwd=REPO, env=env,
                           check=True, stdout=subprocess.DEVNULL)
        env["FACEMON_RECOGNIZER_DATA_KEY_FILE"] = env["FACEMON_DASHBOARD_DATA_KEY_FILE"] = str(key_file)
        log.info("enrolling the sample faces from known_faces/")
        subprocess.run([PY, "-m", "recognizer.identity.enrol", "--known-faces", "known_faces", "--index", str(work / "encodings"), "--quiet"],
                       cwd=REPO, env=env, check=True)
        dashboard_args: list[str] = []
        if not args.no_dashboard and (REPO / "dashboard" / "__main__.py").exists():
            db = f"sqlite:///{work / 'dashboard.sqlite3'}"
            # on a second run the admin and the token exist already: their "already" errors are expected
            with open(work / "dashboard-setup.log", "w") as setup_log:
                for cmd in (["create-admin", "--username", "admin", "--password", ADMIN_PASSWORD],
                            ["add-station", "--station-id", "recognizer", "--kind", "service", "--token", dash_token],
                            ["add-station", "--station-id", "demo-desk", "--token", desk_token]):
                    subprocess.run([PY, "-m", "dashboard", "--db", db, *cmd], cwd=REPO, env=env, check=False,
                                   stdout=setup_log, stderr=subprocess.STDOUT)
            start("dashboard", [PY, "-m", "dashboard", "--db", db, "serve", "--host", args.host, "--port", "5000"])
            # the clip is a 9 s loop whose one unenrolled face (the audience) stays ~1 s: lower the wait so it raises alerts
            dashboard_args = ["--dashboard-url", "http://127.0.0.1:5000", "--dashboard-token", dash_token,
                              "--outbox", str(work / "outbox.sqlite3"), "--unknown-after", "0.5", "--cooldown", "20"]
        # the demo's edge runs without sign-in, so Capture has no admin grant to send: enrolment is open here
        # (the recognizer says so loudly in its log); station ids are still bound when the dashboard runs
        start("recognizer", [PY, "-m", "recognizer", "--host", "127.0.0.1", "--port", "8002", "--token", token,
                             "--enrol-policy", "open", "--index", str(work / "encodings"), "--known-faces", str(work / "known_faces"), *dashboard_args])
        if not wait_port_line(work / "recognizer.log", "listening on", 60):
            log.error("the recognizer did not start; see %s", work / "recognizer.log")
            return 1
        start("edge", [PY, "-m", "edge", "--source", args.source, "--recognizer", "127.0.0.1:8002", "--station", "demo-desk",
                       "--login", "lin_manuel_miranda", "--token", token, "--web-host", args.host, "--web-port", "8001",
                       *(["--dashboard-token", desk_token] if dashboard_args else [])])
        if not wait_http("http://127.0.0.1:8001/api/status", 30):
            log.error("the edge page did not come up; see %s", work / "edge.log")
            return 1
        print("\n  Live feed (edge):   http://127.0.0.1:8001/video_feed_page")
        if dashboard_args:
            print(f"  Dashboard:          http://127.0.0.1:5000/   (user admin, password {ADMIN_PASSWORD})")
        print("  Recognizer:         127.0.0.1:8002 (TCP)")
        print(f"  Logs:               {work}/*.log\n  Ctrl-C stops everything.\n", flush=True)
        deadline = time.time() + args.seconds if args.seconds else float("inf")
        named: set[str] = set()
        while time.time() < deadline:
            time.sleep(1)
            for name, proc in procs:
                if proc.poll() is not None:
                    log.error("%s exited with code %s; see %s", name, proc.returncode, work / f"{name}.log")
                    return 1
            if args.check:
                try:
                    with urllib.request.urlopen("http://127.0.0.1:8001/api/status", timeout=2) as r:
                        status = json.load(r)
                    named |= {f.get("name") for f in status.get("faces", []) if f.get("name")}
                except (urllib.error.URLError, OSError, ValueError):
                    pass
        if args.check:
            log.info("names seen on the feed: %s", sorted(named) or "none")
            ok = "lin_manuel_miranda" in named
            if not ok:
                log.error("the enrolled lin_manuel_miranda was never named on the feed")
            if dashboard_args:
                ok = check_alerts(work, started) and ok
            return 0 if ok else 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        log.info("stopping")
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
