"""Who may be which station, and who may enrol: the recognizer's side of the trust contract (docs/trust.md).

Both questions are answered by the dashboard, which issues and revokes the credentials:

- **Station identity** (`--station-auth dashboard`): a HELLO carries the station's own token as
  `credential`; the dashboard (`POST /api/stations/verify`) says whether it is an active token *of that
  station*. Asked on every handshake, so a revoked credential is refused at the next one.
- **Revocation of live sessions**: every `sync_s` (2 s) the recognizer sends the digests of the credentials it
  holds (connected stations and recently confirmed ones) to the dashboard (`POST /api/stations/credentials`),
  which says which are still valid; a connected station whose credential is no longer valid is disconnected
  (`revoked`) at once, so a revocation bites within `sync_s` plus one request.
- **Outage grace**: when the dashboard cannot be asked, only a credential that was valid at the last
  successful sync (or check), at most `grace_s` ago, is accepted (a dashboard restart does not lock out every
  edge that reconnects meanwhile); any other is refused: failing open would let anyone claim a desk by first
  knocking the dashboard over, and a credential revoked before the last sync is not "recently confirmed".
- **Refusals cost the claimant, not the dashboard**: a refused (station, credential) is refused from memory for
  `refusal_cache_s`, and an address whose claims were refused gets no dashboard check until a delay has passed
  that doubles per refusal (0.5 s … 30 s); such claims are refused from memory meanwhile (a credential known
  to be valid is not held up by what others sent from the same address). At most
  `checks_in_flight` checks per address at once (reserved before asking), so a burst of made-up HELLOs costs
  the dashboard a handful of requests, not one each.
  `--station-auth shared` keeps the old closed-lab rule: the shared token admits any station id.
- **Take-over**: a second connection for a connected station id replaces the first only when it
  proved that station's credential, or when the first has been silent for `takeover_silence_s` (a
  half-open connection left by a network drop), or (shared mode) when it comes from the address the id was
  first claimed from and the holder does not. Anything else is refused `station_in_use`.
- **Shared mode is for a closed lab**: it refuses to start on a non-loopback address without
  `--allow-shared-token-on-network`; a desk cannot be squatted (a fake holding desk-07 is replaced when the
  real desk-07 comes back from its own address) and one address holds at most `max_stations_per_address`
  ids, so made-up ids cannot fill every slot. Whoever claims an id first after a restart owns its address
  binding until the restart after: only per-station credentials (the default with a dashboard) prove a desk.
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
from recognizer.settings import check_section, setting
from shared.config import ConfigError
from shared.http import HttpError, Response, post_json
from shared.names import InvalidName, validate_name

log = logging.getLogger(__name__)

STATION_AUTH_MODES = ("shared", "dashboard")
ENROL_POLICIES = setting("enrol_policy").choices  # grant, open
_MAX_CACHE = 4096
MAX_SYNC = 1024  # credentials re-checked per sync at most (the dashboard's limit too)


@dataclass(frozen=True)
class TrustConfig:
    """Station binding and enrolment rights. Times in seconds."""

    station_auth: str = "shared"  # shared: the shared token admits any station id; dashboard: per-station credentials
    enrol_policy: str = "grant"  # grant: ENROL needs a dashboard-issued grant; open: anyone connected may enrol
    grace_s: float = 300.0  # dashboard unreachable: accept a credential it confirmed this recently
    refusal_cache_s: float = 10.0  # a refused (station, credential) is refused from memory this long
    takeover_silence_s: float = 15.0  # a connection silent this long may be replaced by a new claim
    timeout_s: float = 3.0  # per dashboard request
    sync_s: float = 2.0  # live sessions' credentials re-checked with the dashboard this often (revocation)
    address_delay_s: float = 0.5  # after a refused claim, that address's next check waits this, doubled per refusal
    address_max_delay_s: float = 30.0
    checks_in_flight: int = 4  # dashboard checks one address may have running at once
    allow_shared_on_network: bool = False  # shared mode on a non-loopback address (checked by RecognizerSettings)

    def __post_init__(self) -> None:
        if self.station_auth not in STATION_AUTH_MODES:
            raise ConfigError(f"station auth must be one of {', '.join(STATION_AUTH_MODES)}, not {self.station_auth!r}")
        check_section(self, "trust")  # enrol_policy, grace_s, allow_shared_on_network: their flags' bounds
        if not 0 <= self.refusal_cache_s <= 3600:
            raise ConfigError("refusal_cache_s must be 0..3600 seconds")
        if not 1 <= self.takeover_silence_s <= 3600 or not 0.1 <= self.timeout_s <= 60:
            raise ConfigError("takeover_silence_s must be 1..3600 and timeout_s 0.1..60 seconds")
        if not 0.2 <= self.sync_s <= 600 or not 0 <= self.address_delay_s <= self.address_max_delay_s <= 3600:
            raise ConfigError("sync_s must be 0.2..600 s and 0 <= address_delay_s <= address_max_delay_s <= 3600 s")
        if self.checks_in_flight < 1:
            raise ConfigError("checks_in_flight must be at least 1")


class TrustRefusal(Exception):
    """A handshake or enrolment refused; `code` goes on the wire, `reason` is a sentence for the operator."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class Admission:
    station: str
    verified: bool  # the station's own credential was proved (may take over its station id)
    credential: str = ""  # its SHA-256 (hex; as the dashboard stores tokens): re-checked while it is connected
    home: bool = False  # shared mode: claimed from the address this station id was first admitted from


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
        self._confirmed: dict[tuple[str, str], float] = {}  # (station, credential digest) -> last known valid
        self._refused: dict[tuple[str, str], tuple[float, str]] = {}  # -> (when, reason)
        self._addresses: dict[str, list] = {}  # host -> [refusals, time of the last, checks in flight]
        self._homes: dict[str, str] = {}  # shared mode: station id -> the address it was first claimed from
        self.dashboard_checks = 0  # station checks asked of the dashboard (for tests and the bench)
        self.last_sync: Optional[float] = None  # clock time of the last successful revocation sync

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

    def admit(self, station: str, hello: dict, host: str = "") -> Admission:
        """Decide a HELLO's station claim from `host`; TrustRefusal when its credential does not prove that station."""
        if self.config.station_auth == "shared":
            with self._lock:
                home = self._homes.setdefault(station, host)
                if len(self._homes) > _MAX_CACHE:  # bounded: the oldest station ids are forgotten
                    self._homes.pop(next(iter(self._homes)))
            return Admission(station, verified=False, home=home == host)
        credential = hello.get("credential")
        if not isinstance(credential, str) or not credential or len(credential) > 256:
            raise TrustRefusal("bad_credential", f"station {station!r} must present its station credential "
                                                 "(the edge's --dashboard-token) in HELLO's 'credential'")
        digest = _digest(credential)
        key = (station, digest)
        now = self._clock()
        with self._lock:
            refused = self._refused.get(key)
            if refused is not None and now - refused[0] < self.config.refusal_cache_s:
                raise TrustRefusal("bad_credential", refused[1])
            if key in self._confirmed:  # known good: not held up by what others sent from the same address
                host, self.dashboard_checks = "", self.dashboard_checks + 1
            else:
                self._reserve(host, now)  # raises when this address must wait: nothing asked
        try:
            answer = self._ask("/api/stations/verify", {"station_id": station, "credential": credential})
        except TrustRefusal as unavailable:
            self._release(host, None)
            with self._lock:
                confirmed = self._confirmed.get(key)
            if confirmed is not None and now - confirmed <= self.config.grace_s:
                log.warning("station %s admitted on a credential valid at the last check with the dashboard %.0f s "
                            "ago (%s)", station, now - confirmed, unavailable.reason)
                return Admission(station, verified=True, credential=digest)
            raise
        if answer.status == 200:
            self._release(host, True)
            log.info("station %s proved its credential with the dashboard", station)
            with self._lock:
                self._remember(self._confirmed, key, now)
                self._refused.pop(key, None)
            return Admission(station, verified=True, credential=digest)
        if answer.status == 403 and (answer.json() or {}).get("ok") is False:  # else: our own token was refused
            self._release(host, False)
            reason = f"station credential refused by the dashboard: {answer.reason()}"
            with self._lock:
                self._remember(self._refused, key, (now, reason))
                self._confirmed.pop(key, None)
            raise TrustRefusal("bad_credential", reason)
        self._release(host, None)
        raise self._unavailable(answer)

    def _reserve(self, host: str, now: float) -> None:
        """Caller holds the lock: take one of `host`'s dashboard checks, or refuse while it must wait."""
        entry = self._addresses.get(host)
        if entry is None:
            if len(self._addresses) >= _MAX_CACHE:
                self._addresses = {h: e for h, e in self._addresses.items() if e[2]}  # only those in flight stay
            entry = self._addresses[host] = [0, now, 0]
        refusals, last, in_flight = entry
        if refusals and now - last > 600:  # quiet for ten minutes: forgiven
            refusals = entry[0] = 0
        if refusals:
            wait = min(self.config.address_max_delay_s, self.config.address_delay_s * 2 ** min(refusals - 1, 30))
            if now - last < wait or in_flight:
                raise TrustRefusal("bad_credential", f"claims from {host} were refused {refusals} time(s); no "
                                                     f"new check for {max(0.0, wait - (now - last)):.1f} s")
        elif in_flight >= self.config.checks_in_flight:
            raise TrustRefusal("busy", f"{in_flight} station checks from {host} are running; retry")
        entry[2] += 1
        self.dashboard_checks += 1

    def _release(self, host: str, ok: Optional[bool]) -> None:
        """One of `host`'s checks is over: True proved a credential (forgiven), False refused one, None undecided."""
        if not host:
            return
        with self._lock:
            entry = self._addresses.get(host)
            if entry is None:
                return
            entry[2] = max(0, entry[2] - 1)
            if ok is True:
                entry[0] = 0
            elif ok is False:
                entry[0] += 1
                entry[1] = self._clock()

    # ---- revocation of live sessions ----

    def sync(self, live: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Re-check with the dashboard the credentials of the live sessions and those confirmed recently.

        Returns the live (station, credential digest) pairs no longer valid (to disconnect). The confirmed set
        becomes what the dashboard said is valid now (the outage grace rests on it). Raises TrustRefusal when the
        dashboard cannot be asked (nothing changes then)."""
        with self._lock:
            known = sorted(self._confirmed, key=self._confirmed.get, reverse=True)[:MAX_SYNC]
        pairs = list(dict.fromkeys([*live, *known]))[:MAX_SYNC]
        if not pairs:
            self.last_sync = self._clock()
            return []
        answer = self._ask("/api/stations/credentials", {"credentials": [{"station_id": st, "digest": d}
                                                                         for st, d in pairs]})
        body = answer.json() or {}
        valid = body.get("valid")
        if answer.status != 200 or not isinstance(valid, list) or len(valid) != len(pairs):
            raise self._unavailable(answer)
        now = self._clock()
        revoked = []
        with self._lock:
            for pair, ok in zip(pairs, valid):
                if ok is True:
                    if pair in self._confirmed or pair in live:
                        self._remember(self._confirmed, pair, now)
                else:
                    self._confirmed.pop(pair, None)
                    if pair in live:
                        revoked.append(pair)
        self.last_sync = now
        return revoked

    def may_take_over(self, new: Admission, old_silent_s: float, old_home: bool = True) -> bool:
        """Whether a new connection may replace the live one holding the same station id (see the module doc)."""
        return new.verified or old_silent_s >= self.config.takeover_silence_s or (new.home and not old_home)

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



class RevocationSync:
    """A thread: every `sync_s`, `trust.sync(live())`; each revoked live session goes to `disconnect`.

    `live()` lists (station, credential digest) of connected stations; `disconnect(station, code, reason,
    credential)` closes one. A dashboard that cannot be asked is logged once (and once when it answers again).
    """

    def __init__(self, trust: Trust, live: Callable[[], list[tuple[str, str]]],
                 disconnect: Callable[[str, str, str, str], object]) -> None:
        self.trust, self._live, self._disconnect = trust, live, disconnect
        self._stop = threading.Event()
        self._failing = False
        self.thread = threading.Thread(target=self._run, name="revocation-sync", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=self.trust.config.timeout_s + 2)

    def _run(self) -> None:
        while not self._stop.wait(self.trust.config.sync_s):
            self.sync_once()

    def sync_once(self) -> int:
        """One sync; returns the sessions disconnected."""
        try:
            revoked = self.trust.sync(self._live())
        except TrustRefusal as exc:
            if not self._failing:
                log.warning("revocation sync with the dashboard failed (%s); while it fails, only credentials valid "
                            "at the last sync are admitted, for at most %.0f s", exc.reason, self.trust.config.grace_s)
            self._failing = True
            return 0
        if self._failing:
            log.info("revocation sync with the dashboard works again")
        self._failing = False
        for station, digest in revoked:
            self._disconnect(station, "revoked", "this station's credential was revoked at the dashboard", digest)
        return len(revoked)
