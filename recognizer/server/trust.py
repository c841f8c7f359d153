"""Who may be which station, and who may enrol: the recognizer's side of the trust contract (docs/trust.md).

Both questions are answered by the dashboard, which issues and revokes the credentials:

- **Station identity** (`--station-auth dashboard`): a HELLO carries the station's own token as
  `credential`; the dashboard (`POST /api/stations/verify`) says whether it is an active token *of that
  station*. Asked on every handshake, so a revoked credential is refused at the next one. A refusal is
  remembered for `refusal_cache_s` (a flood of bad claims costs the dashboard one request per 10 s per
  claim). When the dashboard cannot be asked, a credential it confirmed within `grace_s` is still
  accepted (a dashboard restart does not lock out every edge that reconnects meanwhile) and any other
  is refused: failing open would let anyone claim a desk by first knocking the dashboard over.
  `--station-auth shared` keeps the old closed-lab rule: the shared token admits any station id.
- **Take-over**: a second connection for a connected station id replaces the first only when it
  proved that station's credential, or when the first has been silent for `takeover_silence_s` (a
  half-open connection left by a network drop). Anything else is refused `station_in_use`.
- **Enrolment** (`--enrol-policy grant`): ENROL must carry `grant`, a single-use grant the dashboard
  issued to an admin signed in at that station for that identity. The recognizer redeems it
  (`POST /api/enrol/redeem`, which burns it), records the admin the *dashboard* names as `by`, and
  reports the outcome (`POST /api/enrol/outcome`) for the central audit. Asking the dashboard rather
  than checking a signature here: single use needs one shared record of used grants (several
  recognizers, restarts), the audit lives there anyway, and there is no second key to distribute.
  `--enrol-policy open` (closed lab, the demo) enrols without a grant and records `by` as unverified.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from recognizer.alerting.sinks import DashboardTarget
from shared.config import ConfigError
from shared.http import HttpError, Response, post_json
from shared.names import InvalidName, validate_name

log = logging.getLogger(__name__)

STATION_AUTH_MODES = ("shared", "dashboard")
ENROL_POLICIES = ("grant", "open")
_MAX_CACHE = 4096


@dataclass(frozen=True)
class TrustConfig:
    """Station binding and enrolment rights. Times in seconds."""

    station_auth: str = "shared"  # shared: the shared token admits any station id; dashboard: per-station credentials
    enrol_policy: str = "grant"  # grant: ENROL needs a dashboard-issued grant; open: anyone connected may enrol
    grace_s: float = 300.0  # dashboard unreachable: accept a credential it confirmed this recently
    refusal_cache_s: float = 10.0  # a refused (station, credential) is refused from memory this long
    takeover_silence_s: float = 15.0  # a connection silent this long may be replaced by a new claim
    timeout_s: float = 3.0  # per dashboard request

    def __post_init__(self) -> None:
        if self.station_auth not in STATION_AUTH_MODES:
            raise ConfigError(f"station auth must be one of {', '.join(STATION_AUTH_MODES)}, not {self.station_auth!r}")
        if self.enrol_policy not in ENROL_POLICIES:
            raise ConfigError(f"enrol policy must be one of {', '.join(ENROL_POLICIES)}, not {self.enrol_policy!r}")
        if not 0 <= self.grace_s <= 86400 or not 0 <= self.refusal_cache_s <= 3600:
            raise ConfigError("grace_s must be 0..86400 and refusal_cache_s 0..3600 seconds")
        if not 1 <= self.takeover_silence_s <= 3600 or not 0.1 <= self.timeout_s <= 60:
            raise ConfigError("takeover_silence_s must be 1..3600 and timeout_s 0.1..60 seconds")


class TrustRefusal(Exception):
    """A handshake or enrolment refused; `code` goes on the wire, `reason` is a sentence for the operator."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class Admission:
    station: str
    verified: bool  # the station's own credential was proved (may take over its station id)


@dataclass(frozen=True)
class EnrolRight:
    by: str  # who the enrolment is recorded as: the admin the dashboard named, or an unverified marker
    grant_id: Optional[int] = None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Trust:
    """Answers the recognizer's trust questions; thread-safe (station threads call it)."""

    def __init__(self, config: TrustConfig, dashboard: Optional[DashboardTarget],
                 post: Callable[..., Response] = post_json, clock: Callable[[], float] = time.monotonic) -> None:
        if config.station_auth == "dashboard" and dashboard is None:
            raise ConfigError("--station-auth dashboard needs --dashboard-url and --dashboard-token "
                              "(the dashboard holds the station credentials)")
        self.config = config
        self.dashboard = dashboard
        self._post = post
        self._clock = clock
        self._lock = threading.Lock()
        self._confirmed: dict[tuple[str, str], float] = {}  # (station, credential digest) -> when confirmed
        self._refused: dict[tuple[str, str], tuple[float, str]] = {}  # -> (when, reason)

    def describe(self) -> list[str]:
        """Warnings for the start-up log about what this configuration does not protect."""
        out = []
        if self.config.station_auth == "shared":
            out.append("--station-auth shared: station ids are not bound to credentials; anyone with the shared "
                       "token can claim any station id (closed lab only)")
        if self.config.enrol_policy == "open":
            out.append("--enrol-policy open: ANY connected client may enrol ANY face under ANY name, and sign-in "
                       "face checks will then accept that face (closed lab / demo only)")
        elif self.dashboard is None:
            out.append("--enrol-policy grant without --dashboard-url: no grant can be checked, every ENROL is refused")
        return out

    # ---- station identity ----

    def admit(self, station: str, hello: dict) -> Admission:
        """Decide a HELLO's station claim; TrustRefusal when its credential does not prove that station."""
        if self.config.station_auth == "shared":
            return Admission(station, verified=False)
        credential = hello.get("credential")
        if not isinstance(credential, str) or not credential or len(credential) > 256:
            raise TrustRefusal("bad_credential", f"station {station!r} must present its station credential "
                                                 "(the edge's --dashboard-token) in HELLO's 'credential'")
        key = (station, _digest(credential))
        now = self._clock()
        with self._lock:
            refused = self._refused.get(key)
        if refused is not None and now - refused[0] < self.config.refusal_cache_s:
            raise TrustRefusal("bad_credential", refused[1])
        try:
            answer = self._ask("/api/stations/verify", {"station_id": station, "credential": credential})
        except TrustRefusal as unavailable:
            with self._lock:
                confirmed = self._confirmed.get(key)
            if confirmed is not None and now - confirmed <= self.config.grace_s:
                log.warning("station %s admitted on a credential the dashboard confirmed %.0f s ago (%s)",
                            station, now - confirmed, unavailable.reason)
                return Admission(station, verified=True)
            raise
        if answer.status == 200:
            log.info("station %s proved its credential with the dashboard", station)
            with self._lock:
                self._remember(self._confirmed, key, now)
                self._refused.pop(key, None)
            return Admission(station, verified=True)
        if answer.status == 403 and (answer.json() or {}).get("ok") is False:  # else: our own token was refused
            reason = f"station credential refused by the dashboard: {answer.reason()}"
            with self._lock:
                self._remember(self._refused, key, (now, reason))
                self._confirmed.pop(key, None)
            raise TrustRefusal("bad_credential", reason)
        raise self._unavailable(answer)

    def may_take_over(self, new: Admission, old_silent_s: float) -> bool:
        """Whether a new connection may replace the live one holding the same station id (see the module doc)."""
        return new.verified or old_silent_s >= self.config.takeover_silence_s

    # ---- enrolment ----

    def authorize_enrol(self, station: str, raw_name: object, header: dict) -> EnrolRight:
        """The right to enrol `raw_name` at `station` per the policy; TrustRefusal (with the reason) when there is none."""
        if self.config.enrol_policy == "open":
            return EnrolRight(f"{station}/unverified (open enrolment policy)")
        grant = header.get("grant")
        if not isinstance(grant, str) or not grant or len(grant) > 256:
            raise TrustRefusal("no_grant", "enrolment needs an admin's enrol grant from the dashboard: sign in at the "
                                           "edge as an admin (this recognizer runs --enrol-policy grant)")
        if self.dashboard is None:
            raise TrustRefusal("grant_unchecked", "this recognizer has no --dashboard-url, so it cannot check enrol "
                                                  "grants; every enrolment is refused")
        try:
            identity = validate_name(raw_name)
        except InvalidName as exc:
            raise TrustRefusal("invalid_name", str(exc)) from None
        answer = self._ask("/api/enrol/redeem", {"grant": grant, "station_id": station, "identity": identity})
        body = answer.json() or {}
        if answer.status == 200 and body.get("ok") and isinstance(body.get("admin"), str):
            return EnrolRight(str(body["admin"]), int(body.get("grant_id", 0)) or None)
        if answer.status == 403 and body.get("ok") is False:
            raise TrustRefusal(str(body.get("code") or "bad_grant"), f"enrol grant refused: {answer.reason()}")
        raise self._unavailable(answer)

    def enrol_done(self, right: EnrolRight, ok: bool, reason: str) -> None:
        """Report what a granted enrolment came to, for the central audit (best effort: logged when it fails)."""
        if right.grant_id is None or self.dashboard is None:
            return
        try:
            answer = self._ask("/api/enrol/outcome", {"grant_id": right.grant_id, "ok": ok, "reason": reason[:256]})
        except TrustRefusal as exc:
            log.warning("enrolment outcome of grant %d not recorded: %s", right.grant_id, exc.reason)
            return
        if answer.status != 200:
            log.warning("enrolment outcome of grant %d not recorded: HTTP %d %s", right.grant_id, answer.status,
                        answer.reason())

    # ---- plumbing ----

    def _ask(self, path: str, body: dict) -> Response:
        assert self.dashboard is not None
        try:
            return self._post(f"{self.dashboard.url}{path}", body, self.dashboard.token, self.config.timeout_s)
        except HttpError as exc:
            raise TrustRefusal("auth_unavailable", f"the dashboard cannot be asked ({exc})") from None

    @staticmethod
    def _unavailable(answer: Response) -> TrustRefusal:
        if answer.status in (401, 403):
            log.error("the dashboard refused this recognizer's --dashboard-token (HTTP %d: %s); it must be a "
                      "service token", answer.status, answer.reason())
        return TrustRefusal("auth_unavailable", f"the dashboard could not decide (HTTP {answer.status}: "
                                                f"{answer.reason()})")

    def _remember(self, table: dict, key: tuple[str, str], value: object) -> None:
        if len(table) >= _MAX_CACHE:  # bounded: a flood of distinct claims cannot grow it without limit
            table.clear()
        table[key] = value

