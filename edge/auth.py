"""Desk sign-in at the edge: password checked by the dashboard, then a live 1:1 face check, then a session.

The order is the point (the seeds set the session before the face check, so it could be skipped):
a password that the dashboard accepts starts a face check on the recognizer and nothing else; an
`EdgeSession` is created, and the evaluator's identity sent to the recognizer as the desk's login,
only in the callback that receives a *passed* check. Sessions live here, server-side, keyed by a
random id; the browser's signed cookie only carries that id, so a forged or replayed cookie names no
session. Failed sign-ins (wrong password or failed face check) slow down that account at this desk
(exponential delay, `shared.throttle`), here and on the dashboard, which raises `failed_sign_in` with the
evidence frame. Nothing is locked: another account at this desk, or this account at another desk, is
never slowed by someone guessing, so guessing cannot lock the real user (or an admin) out.
"""
from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

from shared.http import HttpError, post_json
from shared.log_limit import RateLimitedLog
from shared.signin import NOT_COUNTED, VERIFY_FRAMES, VERIFY_TIMEOUT
from shared.throttle import MAX_DELAY_S, FailureThrottle, TooManyFailures, Try
from shared.lognames import who

log = logging.getLogger(__name__)

DESK_ROLES = ("evaluator", "staff", "admin")
FEED_ROLES = ("staff", "admin")  # plus the evaluator signed in at this desk
ENROL_ROLES = ("admin",)


class DashboardUnavailable(Exception):
    """The dashboard could not be asked (down, unreachable, or an unexpected answer)."""


@dataclass(frozen=True)
class AuthSettings:
    """Sign-in behaviour. Times in seconds."""

    station: str = "edge"
    verify_frames: int = VERIFY_FRAMES.default
    verify_timeout_s: float = VERIFY_TIMEOUT.default
    max_failures: int = 5  # failures of one account at this desk before each further try waits (5 s doubling)
    failure_window_s: float = 300.0  # quiet time after which an account's failures are forgotten
    max_delay_s: float = MAX_DELAY_S
    attempt_ttl_s: float = 120.0  # a finished attempt is forgotten after this
    max_attempts: int = 32  # sign-ins waiting for (or just past) their face check, at most
    session_idle_s: float = 1800.0  # a session with no request for this long ends (an open page keeps it alive)
    session_max_s: float = 36000.0  # any session ends this long after sign-in: 10 h, an exam day
    max_sessions: int = 64  # sessions kept at most; the least recently used one ends first

    def __post_init__(self) -> None:
        if not 0 < self.session_idle_s <= self.session_max_s:
            raise ValueError("session_idle_s must be positive and at most session_max_s")
        if self.max_sessions < 2 or self.max_attempts < 1:
            raise ValueError("max_sessions must be at least 2 and max_attempts at least 1")


class DashboardClient:
    """Calls the dashboard's sign-in API over HTTP(S) with this station's bearer token (stdlib only)."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _post(self, path: str, body: dict) -> tuple[int, dict]:
        try:
            answer = post_json(self.base_url + path, body, self.token, self.timeout_s)
        except HttpError as exc:
            raise DashboardUnavailable(f"dashboard {self.base_url} unreachable: {exc}") from None
        data = answer.json()
        if data is None:
            raise DashboardUnavailable(f"dashboard answered {answer.status} without JSON")
        return answer.status, data

    def check(self, username: str, password: str, image: Optional[bytes]) -> tuple[int, dict]:
        body = {"username": username, "password": password}
        if image:
            body["image"] = base64.b64encode(image).decode()
        return self._post("/api/auth/check", body)

    def enrol_grant(self, ticket: str, identity: str) -> tuple[int, dict]:
        """Ask for a single-use grant to enrol `identity` here, with the desk ticket of the admin signed in."""
        return self._post("/api/enrol/grants", {"ticket": ticket, "identity": identity})

    def report_failure(self, username: str, reason: str, image: Optional[bytes]) -> tuple[int, dict]:
        body = {"username": username, "reason": reason}
        if image:
            body["image"] = base64.b64encode(image).decode()
        return self._post("/api/auth/failure", body)


@dataclass
class EdgeSession:
    """A signed-in person at this edge (server-side; the cookie holds only `sid`)."""

    sid: str
    username: str
    role: str
    identity: Optional[str]
    created: float
    enrol_ticket: Optional[str] = field(default=None, repr=False)  # an admin's right to ask for enrol grants here
    last_used: float = 0.0  # the clock of its latest request (idle expiry)


@dataclass
class Attempt:
    """One sign-in after its password step: waiting for the face check; `sid` is set only when it passed."""

    id: str
    username: str
    role: str
    identity: str
    started: float
    state: str = "verifying"  # verifying | signed_in | failed
    progress: dict = field(default_factory=dict)
    sid: Optional[str] = None
    request_id: Optional[str] = None
    enrol_ticket: Optional[str] = field(default=None, repr=False)
    reserved: Optional[Try] = field(default=None, repr=False)  # the throttle's place, held until the face check ends


class VerifyLink(Protocol):
    """What sign-in needs from `edge.link.RecognizerLink`."""

    def verify(self, identity: str, frames: int, timeout_s: float, on_done: Callable[[dict], None]) -> Optional[str]: ...

    def verify_progress(self, request_id: str) -> Optional[dict]: ...

    def cancel_verify(self) -> None: ...

    def set_login(self, login: str) -> None: ...


class SignIn:
    """Sign-in, sessions and sign-out of one edge. Thread-safe (Flask threads and link threads call it)."""

    def __init__(self, settings: AuthSettings, dashboard: DashboardClient, link: VerifyLink,
                 evidence: Callable[[], Optional[bytes]] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.dashboard = dashboard
        self.link = link
        self.evidence = evidence  # the current camera frame as JPEG, sent along with failures
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, EdgeSession] = OrderedDict()  # least recently used first
        self._attempts: OrderedDict[str, Attempt] = OrderedDict()  # oldest first
        self._desk: Optional[str] = None  # sid of the evaluator whose monitored session runs at this desk
        self.throttle = FailureThrottle(free=settings.max_failures, cap_s=settings.max_delay_s,
                                        forget_s=settings.failure_window_s,
                                        hold_s=settings.verify_timeout_s + settings.attempt_ttl_s, clock=clock)
        self.refusals = RateLimitedLog(log, "refused or failed sign-ins")

    # ---- the password step ----

    def password(self, username: str, password: str) -> tuple[int, dict]:
        """Check the password with the dashboard; on success start the face check (no session yet).

        Returns (HTTP status, JSON body): 200 {state: verifying, attempt} or {state: signed_in} for an
        account without an enrolled identity (staff/admin only), 400 a name or password missing, 401 wrong
        password, 403 no desk role, 429 too many failures (or the dashboard busy), 503 dashboard or recognizer
        unavailable.
        """
        username = username.strip()[:64]
        if not username or not password:
            return 400, {"state": "failed", "reason": "missing", "message": "enter a user name and a password"}
        try:
            reserved = self.throttle.begin(username)  # before the dashboard is asked: tries at once count too
        except TooManyFailures as exc:
            self.refusals.warning("sign-in for %r refused: too many failures, %d s to wait", username, exc.retry_after)
            return 429, {"state": "failed", "reason": "too_many_failures",
                         "message": f"too many failed sign-ins; try again in {exc.retry_after} s"}
        try:
            status, body = self.dashboard.check(username, password, self.evidence())
        except DashboardUnavailable as exc:
            reserved.abandon()
            log.warning("sign-in for %r: %s", username, exc)
            return 503, {"state": "failed", "reason": "dashboard_unavailable", "message": "sign-in service unavailable"}
        except BaseException:
            reserved.abandon()
            raise
        if status == 401:
            delay = reserved.failed()
            self.refusals.warning("sign-in for %r: wrong password%s", username,
                                  f"; next try in {delay:.0f} s" if delay else "")
            return 401, {"state": "failed", "reason": "wrong_password", "message": "wrong user name or password"}
        if status != 200 or not body.get("ok"):
            reserved.abandon()  # refused by the dashboard (its own limit, no desk role): not this desk's failure
            return status if status in (400, 403, 429) else 503, {
                "state": "failed", "reason": body.get("reason", "refused"), "message": body.get("message", "refused")}
        role, identity = body.get("role"), body.get("identity")
        ticket = body.get("enrol_ticket") if role in ENROL_ROLES and isinstance(body.get("enrol_ticket"), str) else None
        if role not in DESK_ROLES:
            reserved.abandon()
            return 403, {"state": "failed", "reason": "no_desk_role", "message": "this account may not sign in at a desk"}
        if not identity:
            if role == "evaluator":
                reserved.abandon()
                return 403, {"state": "failed", "reason": "not_enrolled",
                             "message": "this evaluator has no enrolled identity"}
            # staff/admin without an enrolled face: password only, and they never become the desk's login
            sid = self._new_session(body["username"], role, None, enrol_ticket=ticket)
            reserved.succeeded()
            return 200, {"state": "signed_in", "sid": sid, "role": role}
        return self._start_check(body["username"], role, identity, reserved, ticket)

    def _start_check(self, username: str, role: str, identity: str, reserved: Try,
                     ticket: Optional[str] = None) -> tuple[int, dict]:
        """The face check of a sign-in whose password was right; `reserved` (the throttle's place) is finished
        with the check's outcome."""
        attempt = Attempt(secrets.token_urlsafe(32), username, role, identity, self._clock(), enrol_ticket=ticket,
                          reserved=reserved)
        ended: list[Try] = []
        with self._lock:
            ended += self._forget_old()
            for other in self._attempts.values():  # one face check at a time per desk
                if other.state == "verifying":
                    other.state = "failed"
                    other.progress = {"state": "failed", "reason": "cancelled", "message": "another sign-in started"}
                    ended.append(other.reserved)
            self._attempts[attempt.id] = attempt
            while len(self._attempts) > self.settings.max_attempts:
                ended.append(self._attempts.popitem(last=False)[1].reserved)
        for tried in ended:  # a cancelled check is nobody's failure
            if tried is not None:
                tried.abandon()
        request_id = self.link.verify(identity, self.settings.verify_frames, self.settings.verify_timeout_s,
                                      lambda progress: self._on_checked(attempt.id, progress))
        if request_id is None:
            with self._lock:
                attempt.state = "failed"
                attempt.progress = {"state": "failed", "reason": "offline", "message": "recognizer offline"}
            reserved.abandon()
            return 503, {"state": "failed", "reason": "offline", "message": "recognizer offline; try again shortly"}
        with self._lock:
            attempt.request_id = request_id
        log.info("password accepted for %r (%s); face check against %s started", username, role, who(identity))
        return 200, {"state": "verifying", "attempt": attempt.id, "needed": self.settings.verify_frames}

    # ---- the face check's outcome (called from a link thread) ----

    def _on_checked(self, attempt_id: str, progress: dict) -> None:
        with self._lock:
            attempt = self._attempts.get(attempt_id)
            if attempt is None or attempt.state != "verifying":
                return
            attempt.progress = progress
            passed = progress.get("state") == "passed"
            if not passed:
                attempt.state = "failed"
        reserved = attempt.reserved
        if passed:
            sid = self._new_session(attempt.username, attempt.role, attempt.identity, desk=True,
                                    enrol_ticket=attempt.enrol_ticket)
            if reserved is not None:
                reserved.succeeded()
            else:
                self.throttle.succeeded(attempt.username)
            with self._lock:
                attempt.sid, attempt.state = sid, "signed_in"
            log.info("sign-in of %r passed the face check; session started", attempt.username)
            return
        reason = str(progress.get("reason", "failed"))
        self.refusals.warning("sign-in of %r failed the face check: %s", attempt.username, reason)
        if reason in NOT_COUNTED:  # not the person's failure (cancelled, offline, malformed): nothing to count or report
            if reserved is not None:
                reserved.abandon()
            return
        if reserved is not None:
            reserved.failed()
        else:
            self.throttle.failed(attempt.username)
        try:
            self.dashboard.report_failure(attempt.username, reason, self.evidence())
        except DashboardUnavailable as exc:
            log.warning("could not report the failed sign-in: %s", exc)

    def progress(self, attempt_id: str) -> Optional[dict]:
        """The attempt's state for the page: verifying (with progress), signed_in (with sid) or failed."""
        with self._lock:
            attempt = self._attempts.get(attempt_id)
            if attempt is None:
                return None
            request_id, state = attempt.request_id, attempt.state
        if state == "verifying" and request_id is not None:
            latest = self.link.verify_progress(request_id)  # also expires a check the recognizer never ended
            with self._lock:
                if latest is not None and attempt.state == "verifying":
                    attempt.progress = latest
        with self._lock:
            body = {"state": attempt.state, "progress": dict(attempt.progress), "needed": self.settings.verify_frames}
            if attempt.state == "signed_in":
                body["sid"] = attempt.sid
                body["role"] = attempt.role
            return body

    # ---- sessions ----

    def _new_session(self, username: str, role: str, identity: Optional[str], desk: bool = False,
                     enrol_ticket: Optional[str] = None) -> str:
        sid = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            ended = self._expire(now)
            self._sessions[sid] = EdgeSession(sid, username, role, identity, now, enrol_ticket, last_used=now)
            previous = self._desk if desk and role == "evaluator" else None
            if desk and role == "evaluator":
                self._desk = sid
            if previous is not None and previous != sid:
                self._sessions.pop(previous, None)  # the desk has one evaluator: the earlier one is signed out
            ended = self._evict() or ended
        self._ended(ended)
        if desk and role == "evaluator":
            self.link.set_login(identity or "")  # monitoring now expects this face
        return sid

    def session(self, sid: Optional[str]) -> Optional[EdgeSession]:
        """The live session for a cookie's sid (None when unknown, ended, expired, or an evaluator no longer at
        the desk); a request that finds it counts as its use (idle expiry)."""
        if not sid or not isinstance(sid, str):
            return None
        now = self._clock()
        with self._lock:
            ended = self._expire(now)
            s = self._sessions.get(sid)
            if s is not None and s.role == "evaluator" and self._desk != sid:
                s = None
            if s is not None:
                s.last_used = now
                self._sessions.move_to_end(sid)
        self._ended(ended)
        return s

    def sign_out(self, sid: Optional[str]) -> bool:
        """End a session; the desk's evaluator signing out ends monitoring under their name (desk unattended)."""
        with self._lock:
            s = self._sessions.pop(sid, None) if sid else None
            ends_desk = s is not None and self._desk == sid
            if ends_desk:
                self._desk = None
        if ends_desk:
            self.link.set_login("")
        if s is not None:
            log.info("%r signed out%s", s.username, " (desk now unattended)" if ends_desk else "")
        return s is not None

    @property
    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expire(self, now: float) -> bool:
        """Drop sessions idle past session_idle_s or older than session_max_s (under the lock); True when the
        desk's evaluator session was among them."""
        idle, most = self.settings.session_idle_s, self.settings.session_max_s
        gone = [sid for sid, s in self._sessions.items() if now - s.last_used > idle or now - s.created >= most]
        return self._drop(gone, "expired")

    def _evict(self) -> bool:
        """Keep at most max_sessions (under the lock): the least recently used go first, the desk's evaluator last."""
        extra = len(self._sessions) - self.settings.max_sessions
        if extra <= 0:
            return False
        order = [sid for sid in self._sessions if sid != self._desk]
        if self._desk in self._sessions:
            order.append(self._desk)
        return self._drop(order[:extra], "ended to make room (max_sessions)")

    def _drop(self, sids: list[str], why: str) -> bool:
        desk_ended = False
        for sid in sids:
            s = self._sessions.pop(sid)
            if sid == self._desk:
                self._desk = None
                desk_ended = True
            log.info("session of %r %s", s.username, why)
        return desk_ended

    def _ended(self, desk_ended: bool) -> None:
        """After the lock: an ended desk session leaves the desk unattended, as a sign-out does."""
        if desk_ended:
            log.info("the desk's evaluator session ended; desk now unattended")
            self.link.set_login("")

    def enrol_grant(self, who: EdgeSession, name: str) -> tuple[int, dict]:
        """A dashboard grant for `who` (an admin signed in here) to enrol `name`: (201, {grant, ...}) or a refusal."""
        if not who.enrol_ticket:
            return 403, {"ok": False, "code": "no_ticket", "reason": "this sign-in carries no enrol right; sign in again"}
        try:
            status, body = self.dashboard.enrol_grant(who.enrol_ticket, name)
        except DashboardUnavailable as exc:
            log.warning("enrol grant for %r: %s", name, exc)
            return 503, {"ok": False, "code": "dashboard_unavailable",
                         "reason": "the dashboard that issues enrol grants is unreachable"}
        if status != 201 or not isinstance(body.get("grant"), str):
            reason = str(body.get("error") or body.get("reason") or f"HTTP {status}")
            log.warning("enrol grant for %r refused: %s", name, reason)
            return (403 if status in (401, 403) else 503), {"ok": False, "code": str(body.get("code", "no_grant")),
                                                           "reason": f"no enrol grant: {reason}"}
        return 201, body

    def desk(self) -> Optional[EdgeSession]:
        """The evaluator signed in at this desk (None when nobody is, or their session expired)."""
        with self._lock:
            ended = self._expire(self._clock())
            desk = self._sessions.get(self._desk) if self._desk else None
        self._ended(ended)
        return desk

    def _forget_old(self) -> list[Try]:
        """Drop attempts past their time (under the lock); the throttle places they still held."""
        cutoff = self._clock() - self.settings.attempt_ttl_s - self.settings.verify_timeout_s
        old = [k for k, a in self._attempts.items() if a.started < cutoff]
        return [t for t in (self._attempts.pop(k).reserved for k in old) if t is not None]


def may_view(session: Optional[EdgeSession], desk: Optional[EdgeSession]) -> bool:
    """The live feed and status: staff and admins, or the evaluator signed in at this desk."""
    if session is None:
        return False
    return session.role in FEED_ROLES or (desk is not None and session.sid == desk.sid)


def may_enrol(session: Optional[EdgeSession]) -> bool:
    return session is not None and session.role in ENROL_ROLES


def load_secret(path: Path) -> str:
    """The Flask session key kept in `path`, created (mode 0600) on first use."""
    try:
        value = path.read_text().strip()
        if len(value) >= 32:
            return value
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(value + "\n")
    log.info("generated a new session key in %s", path)
    return value


def record_enrolment(path: Path, by: str, name: str, answer: dict) -> None:
    """Append who enrolled whom, when and with what outcome to a JSON-lines file."""
    line = json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "by": by, "name": name,
                       "ok": bool(answer.get("ok")), "reason": answer.get("reason", "")})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
