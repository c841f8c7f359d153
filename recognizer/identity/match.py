"""Matching face encodings against the enrolled index: the open-set decision.

The seeds' rule (every enrolled encoding within `tolerance` votes for its person, most votes wins; kept for
comparison in `recognizer.tools.seeds`) is where this starts. The open-set rule (`evidence` per frame,
`IdentityVoter` per track) keeps that vote and adds what
makes "unknown" reliable: a frame supports a person only when that person is the nearest identity
(`accept_distance`, optionally per person), leads the second-best identity by `margin`, and holds
`min_votes` votes; a track is named only after `need` of its last `window` frames agree, and keeps
its name until `need` frames say otherwise (hysteresis). See docs/recognition.md.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Optional

import numpy as np

from recognizer.identity.index import DIM, FaceIndex
from recognizer.settings import check_section
from shared.results import KNOWN, PENDING, UNKNOWN, UNSURE

log = logging.getLogger(__name__)

STATES = (PENDING, KNOWN, UNKNOWN, UNSURE)
"""A track's verdict: pending (not enough evidence yet), known (named), unknown (certainly nobody enrolled:
nobody within the vote radius), unsure (someone is within the vote radius but nobody is accepted: an
enrolled person seen badly, or a look-alike; never reported as a stranger)."""
# kinds of frame evidence
SUPPORT, WEAK, NONE = "support", "weak", "none"


def _as_queries(index: FaceIndex, encodings: np.ndarray) -> np.ndarray:
    q = np.asarray(encodings, np.float32)
    if q.size % DIM:
        raise ValueError(f"encodings must be (k, {DIM}) dlib face encodings, got shape {q.shape}")
    return q.reshape(-1, DIM)


def _sq_distances(q: np.ndarray, e: np.ndarray, e_sq: np.ndarray) -> np.ndarray:
    # |q-e|^2 = |q|^2 + |e|^2 - 2 q.e : one matrix product instead of a (k,N,128) temporary
    d2 = (q * q).sum(1)[:, None] + e_sq[None, :] - 2.0 * (q @ e.T)
    return np.maximum(d2, 0.0, out=d2)


def distances(index: FaceIndex, encodings: np.ndarray) -> np.ndarray:
    """Euclidean distances (k, N) between k query encodings and the N enrolled ones (index order)."""
    q = _as_queries(index, encodings)
    e = index.encodings
    return np.sqrt(_sq_distances(q, e, np.einsum("ij,ij->i", e, e)))


@dataclass(frozen=True)
class PersonScores:
    """Per-person figures for k faces against an index with P people (all arrays (k, P))."""

    people: tuple[str, ...]  # label -> name
    nearest: np.ndarray  # (k,P) float32 distance to each person's closest enrolled encoding
    votes: np.ndarray  # (k,P) int32 enrolled encodings of each person within `tolerance`
    distance: np.ndarray  # (k,P) float32 distance to each person: `nearest`, or their mean encoding when closer


def person_scores(index: FaceIndex, encodings: np.ndarray, tolerance: float) -> PersonScores:
    """Distances and vote count per person for k encodings: two matrix products, two `reduceat`s.

    A person's `distance` (what the open-set rule judges) is the smaller of the distance to their closest enrolled encoding and the distance
    to their mean encoding (prototype): averaging k photos cancels much of each photo's own noise (pose,
    light, expression), so a genuine probe comes closer to the mean than to most single photos, while a
    stranger does not (measured: genuine median 0.460 -> 0.444 at k=3, closest stranger 0.596 -> 0.597;
    docs/recognition.md). Encodings are grouped by person in `index.arrays`, so a person's minimum and
    votes are one segment reduction each (the equivalent of `bincount` over labels, without a gather).
    """
    a = index.arrays
    q = _as_queries(index, encodings)
    k, p = len(q), len(a.people)
    if p == 0 or k == 0:
        inf = np.full((k, p), np.inf, np.float32)
        return PersonScores(a.people, inf, np.zeros((k, p), np.int32), inf)
    d2 = _sq_distances(q, a.grouped, a.sq_norms)
    nearest_sq = np.minimum.reduceat(d2, a.starts, axis=1)
    votes = np.add.reduceat(d2 <= np.float32(tolerance * tolerance), a.starts, axis=1, dtype=np.int32)
    to_mean_sq = _sq_distances(q, a.centroids, a.centroid_sq)
    return PersonScores(a.people, np.sqrt(nearest_sq), votes, np.sqrt(np.minimum(nearest_sq, to_mean_sq)))


@dataclass(frozen=True)
class OpenSetParams:
    """Open-set decision per frame and N-of-M accumulation per track (distances are Euclidean, dlib 128-D)."""

    tolerance: float = 0.6
    """Seeds' vote radius: enrolled encodings within this distance vote for their person; beyond it for
    everyone, a frame matches nobody (0.6 is dlib's usual operating point)."""
    accept_distance: float = 0.58
    """Acceptance: the nearest person (closest enrolled encoding or mean encoding) must be within this
    distance (≤ tolerance). Chosen on held-out people and degraded probes (docs/recognition.md)."""
    margin: float = 0.10
    """The second-nearest person must be at least this much farther than the nearest (distance units)."""
    min_votes: int = 2
    """Votes (encodings within `tolerance`) the nearest person needs; capped at that person's enrolled count."""
    person_slack: float = 0.0
    """Per-person thresholds: accept_distance moves by each person's enrolled spread relative to the
    index's median spread, by at most this much (distance units; 0 turns it off)."""
    window: int = 5
    """M: observations (encoded frames) remembered per track."""
    need: int = 3
    """N: observations out of the last `window` that must agree before a track is named or declared
    unknown, and before it leaves a name (hysteresis); more than half of `window`."""
    max_tracks: int = 1024
    """Tracks remembered per station; the least recently observed is dropped beyond this."""

    def __post_init__(self) -> None:
        check_section(self, "match")  # tolerance, accept_distance, margin, min_votes, person_slack: their flags' bounds
        if self.accept_distance > self.tolerance:
            raise ValueError(
                f"accept_distance must be in (0, tolerance={self.tolerance}] (0.58 is the default), got {self.accept_distance}"
            )
        if self.window < 1:
            raise ValueError(f"window must be at least 1 observation, got {self.window}")
        if not (self.window < 2 * self.need and self.need <= self.window):
            raise ValueError(
                f"need must be more than half of window and at most window (so a track cannot be named and "
                f"unknown at once), got need={self.need}, window={self.window}"
            )
        if self.max_tracks < 1:
            raise ValueError(f"max_tracks must be at least 1, got {self.max_tracks}")


@dataclass(frozen=True)
class Evidence:
    """What one frame says about one face: `kind` is support (accepted for `name`), weak (someone within
    tolerance but not accepted) or none (nobody within tolerance). `name` is the nearest person."""

    kind: str
    name: Optional[str]
    distance: float  # to the nearest person's closest encoding
    second: float  # to the second-nearest person's closest encoding (inf when fewer than 2 people)
    votes: int  # of the nearest person


def person_thresholds(index: FaceIndex, params: OpenSetParams) -> np.ndarray:
    """Acceptance distance per person (P,): `accept_distance`, moved by at most `person_slack` by spread.

    A person's spread is the mean distance between their own enrolled encodings; people whose photos
    differ more get a looser threshold, tighter ones a stricter threshold, relative to the median.
    People with a single encoding keep `accept_distance`. Never above `tolerance`.
    """
    a = index.arrays
    base = np.full(len(a.people), params.accept_distance, np.float32)
    if params.person_slack == 0.0 or len(a.people) == 0:
        return base
    spread = np.full(len(a.people), np.nan, np.float32)
    for p, (start, count) in enumerate(zip(a.starts, a.counts)):
        if count >= 2:
            e = a.grouped[start:start + count]
            d = np.sqrt(np.maximum(_sq_distances(e, e, a.sq_norms[start:start + count]), 0.0))
            spread[p] = d[np.triu_indices(count, 1)].mean()
    if np.all(np.isnan(spread)):
        return base
    shift = np.clip(np.nan_to_num(spread - np.nanmedian(spread)), -params.person_slack, params.person_slack)
    return np.minimum(base + shift, params.tolerance).astype(np.float32)


def _thresholds(index: FaceIndex, params: OpenSetParams) -> np.ndarray:
    if params.person_slack == 0.0:
        return np.full(len(index.arrays.people), params.accept_distance, np.float32)
    # kept with the index it was computed from: it goes when the index goes
    key = ("person_thresholds", params.accept_distance, params.person_slack, params.tolerance)
    cached = index.memo.get(key)
    if cached is None:
        cached = index.memo[key] = person_thresholds(index, params)
    return cached


def evidence(index: FaceIndex, encodings: np.ndarray, params: OpenSetParams = OpenSetParams()) -> list[Evidence]:
    """Open-set evidence of k encodings (k,128) from one frame, one matrix product for all of them."""
    s = person_scores(index, encodings, params.tolerance)
    k, p = s.distance.shape
    if p == 0:
        return [Evidence(NONE, None, float("inf"), float("inf"), 0) for _ in range(k)]
    rows = np.arange(k)
    best = np.argmin(s.distance, axis=1)
    d1 = s.distance[rows, best]
    d2 = np.partition(s.distance, 1, axis=1)[:, 1] if p > 1 else np.full(k, np.inf, np.float32)
    v1 = s.votes[rows, best]
    others = s.votes.copy()
    others[rows, best] = 0
    need_votes = np.minimum(params.min_votes, index.arrays.counts[best])
    accepted = (
        (d1 <= _thresholds(index, params)[best])
        & (d2 - d1 >= params.margin)
        & (v1 >= need_votes)
        & (v1 >= others.max(axis=1))  # the nearest person must also lead the seeds' vote
    )
    near = d1 <= params.tolerance
    if len(index.negative_names):
        # a face an admin said is NOT its nearest person is neither accepted as them nor "not sure" about them:
        # it counts as nobody's (a stranger, so its track is reported unknown rather than queued as not sure again)
        vetoed = negative_veto(index, _as_queries(index, encodings), best, d1)
        accepted &= ~vetoed
        near &= ~vetoed
    out = []
    for i in range(k):
        kind = SUPPORT if accepted[i] else (WEAK if near[i] else NONE)
        out.append(Evidence(kind, s.people[best[i]], float(d1[i]), float(d2[i]), int(v1[i])))
    return out


def negative_veto(index: FaceIndex, q: np.ndarray, best: np.ndarray, d1: np.ndarray) -> np.ndarray:
    """(k,) True where query i is closer to a negative of its nearest person `best[i]` ("not X", kept by the
    gallery) than to that person (`d1[i]`): the face is more like someone known NOT to be X than like X.

    Nearest-neighbour with the negatives as one more class: a genuine face of X sits closer to X's own photos
    than to a stranger who was mistaken for X, so only faces like that stranger are refused."""
    labels = {name: p for p, name in enumerate(index.arrays.people)}
    owner = np.fromiter((labels.get(n, -1) for n in index.negative_names), np.int64, len(index.negative_names))
    neg = index.negatives
    d = np.sqrt(_sq_distances(q, neg, np.einsum("ij,ij->i", neg, neg)))  # (k, M)
    d = np.where(owner[None, :] == best[:, None], d, np.inf)
    return d.min(axis=1) < d1


@dataclass(frozen=True)
class TrackIdentity:
    """Who a tracked face is: `state` pending (not enough evidence yet), known (`name` set), unknown
    (nobody enrolled) or unsure (someone within the vote radius, nobody accepted; `candidate` is the nearest).

    `distance` is the latest encoding's: to `name` from the last frame that supported the name when known, to
    the nearest person otherwise (an alert reports the face on screen now, not the best frame of the window);
    `confidence` is the share (0–1) of the window's observations that agree with the state; `observations`
    counts frames observed for the track since its evidence last started over (`IdentityVoter`: a person swap).
    """

    name: Optional[str]
    state: str
    distance: float
    confidence: float
    observations: int
    candidate: Optional[str] = None  # unsure: the nearest enrolled person (a hint for staff, not a name)


_NEW = TrackIdentity(None, PENDING, float("inf"), 0.0, 0)


class _Track:
    __slots__ = ("history", "identity", "encodings")

    def __init__(self, window: int) -> None:
        self.history: deque[Evidence] = deque(maxlen=window)
        self.identity = _NEW
        self.encodings: deque[np.ndarray] = deque(maxlen=window)  # the face's own recent encodings (swap test)

    def restart(self) -> None:
        self.history.clear()
        self.encodings.clear()
        self.identity = _NEW


def is_swap(track: _Track, query: np.ndarray, ev: Evidence, radius: float) -> bool:
    """True when `query` (128,) is another person than the one the track has been seeing: farther than `radius`
    (the vote radius: dlib's own "not the same person" distance) from the mean of the track's recent encodings,
    and not a frame supporting the track's name. A tracker can carry one box across a cut from one person to
    another in the same seat; that person's votes, name and distances must not be the newcomer's."""
    if not track.encodings:
        return False
    if track.identity.state == KNOWN and ev.kind == SUPPORT and ev.name == track.identity.name:
        return False  # the named person seen from another angle: agrees, whatever the jump
    mean = np.mean(np.stack(track.encodings), axis=0)
    return float(np.linalg.norm(query - mean)) > radius


def _decide(prev: TrackIdentity, history: deque, params: OpenSetParams) -> TrackIdentity:
    """N-of-M with hysteresis over a track's recent evidence (pure).

    Not known -> known X: `need` of the window accepted for X. -> unknown: `need` of the window matching
    nobody (no enrolled encoding within `tolerance`). -> unsure: a full window with `need` frames not
    accepted for anyone while someone was within `tolerance` (weak), or an unknown track whose last `need`
    frames were all weak. Known X -> Y or unknown: see below; weak frames never remove a name.
    """
    n_obs = prev.observations + 1
    total = len(history)
    support: dict[str, int] = {}
    for e in history:
        if e.kind == SUPPORT:
            support[e.name] = support.get(e.name, 0) + 1
    leader, lead = max(support.items(), key=lambda kv: kv[1]) if support else (None, 0)
    unmatched = total - sum(support.values())  # weak + none
    recent = list(history)[-params.need:]
    full_recent = len(recent) == params.need

    last = history[-1]

    def known(name: str) -> TrackIdentity:
        named = [e.distance for e in history if e.kind == SUPPORT and e.name == name]
        return TrackIdentity(name, KNOWN, named[-1] if named else prev.distance, len(named) / total, n_obs)

    def unknown() -> TrackIdentity:
        nobody_share = sum(1 for e in history if e.kind == NONE) / total
        return TrackIdentity(None, UNKNOWN, last.distance, nobody_share, n_obs)

    def unsure() -> TrackIdentity:
        near = min(history, key=lambda e: e.distance)  # the hint: the person nearest over the window
        return TrackIdentity(None, UNSURE, last.distance, unmatched / total, n_obs, candidate=near.name)

    if prev.state == KNOWN:
        # a name is left only on strong contrary evidence: the last `need` frames all accepted for one
        # other person, or all matching nobody; weak frames never remove a name, and frames
        # alternating between two people cannot make it flip back and forth
        if full_recent and all(e.kind == SUPPORT and e.name == recent[0].name != prev.name for e in recent):
            return known(recent[0].name)
        if full_recent and all(e.kind == NONE for e in recent):
            return unknown()
        return known(prev.name)
    if lead >= params.need:
        return known(leader)
    if prev.state == UNKNOWN:
        # a stranger stays a stranger unless the recent frames all put someone within the vote radius
        if full_recent and all(e.kind != NONE for e in recent):
            return unsure()
        return unknown()
    nobody = sum(1 for e in history if e.kind == NONE)
    # clear strangers (nobody within tolerance) are reported after `need` frames; borderline faces
    # (weak frames) get the whole window to gather support first and then are "unsure", not strangers
    if nobody >= params.need:
        return unknown()
    if (total == params.window and unmatched >= params.need) or prev.state == UNSURE:
        return unsure()
    return TrackIdentity(None, PENDING, last.distance, lead / total, n_obs)


class IdentityVoter:
    """Per-track identity for one station: frame evidence accumulated N of M with hysteresis.

    Thread-safe; tracks are forgotten by `forget` or, beyond `max_tracks`, least recently observed first.
    """

    def __init__(self, params: OpenSetParams = OpenSetParams()) -> None:
        self.params = params
        self._tracks: OrderedDict[int, _Track] = OrderedDict()
        self._lock = threading.Lock()
        self._restarted: list[int] = []  # tracks whose evidence started over (a person swap), for take_restarted

    def _update(self, track_id: int, ev: Evidence, query: np.ndarray) -> TrackIdentity:
        track = self._tracks.pop(track_id, None) or _Track(self.params.window)
        self._tracks[track_id] = track
        while len(self._tracks) > self.params.max_tracks:
            dropped, _ = self._tracks.popitem(last=False)
            log.debug("dropping identity history of track %d (max_tracks %d)", dropped, self.params.max_tracks)
        if is_swap(track, query, ev, self.params.tolerance):
            log.info("track %d: another person in the same place (was %s %s): its identity evidence starts over",
                     track_id, track.identity.state, track.identity.name or "")
            track.restart()
            self._restarted.append(track_id)
        track.history.append(ev)
        track.encodings.append(query)
        before = track.identity
        track.identity = _decide(before, track.history, self.params)
        if (before.state, before.name) != (track.identity.state, track.identity.name):
            log.debug("track %d: %s %s -> %s %s", track_id, before.state, before.name,
                      track.identity.state, track.identity.name)
        return track.identity

    def observe(self, track_id: int, index: FaceIndex, encodings: np.ndarray) -> TrackIdentity:
        """Add one frame's encodings (k,128) of `track_id` (averaged into one observation) and return its identity."""
        return self.observe_many([(track_id, encodings)], index)[track_id]

    def observe_many(self, observations: list[tuple[int, np.ndarray]], index: FaceIndex,
                     seen_badly: frozenset = frozenset()) -> dict[int, TrackIdentity]:
        """Add one frame's observations of several tracks, matched in one matrix product.

        `seen_badly`: tracks whose face on this frame is too poor to call a stranger (too small, or seen only in
        profile): a frame matching nobody counts as weak for them (it can name no one, but an enrolled person seen
        badly is not "unknown").
        """
        queries, ids = [], []
        for track_id, enc in observations:
            q = _as_queries(index, enc)
            if len(q):
                # several encodings of one face in one frame are one observation, not several votes
                queries.append(q.mean(axis=0))
                ids.append(track_id)
        evs = evidence(index, np.stack(queries), self.params) if queries else []
        out: dict[int, TrackIdentity] = {}
        with self._lock:
            for track_id, ev, query in zip(ids, evs, queries):
                if ev.kind == NONE and track_id in seen_badly and ev.name is not None:
                    ev = Evidence(WEAK, ev.name, ev.distance, ev.second, ev.votes)
                out[track_id] = self._update(track_id, ev, query)
            for track_id, _ in observations:
                if track_id not in out:
                    out[track_id] = self._current(track_id)
        return out

    def take_restarted(self) -> list[int]:
        """Tracks whose evidence started over since the last call (another person came in their place): whatever
        else is kept per track (liveness, a review crop) belongs to the person who left."""
        with self._lock:
            out, self._restarted = self._restarted, []
            return out

    def _current(self, track_id: int) -> TrackIdentity:
        track = self._tracks.get(track_id)
        return track.identity if track else _NEW

    def current(self, track_id: int) -> TrackIdentity:
        """The track's identity now (pending with no observations for a track never seen)."""
        with self._lock:
            return self._current(track_id)

    def forget(self, track_id: int) -> None:
        """Drop a track's history (it left the picture)."""
        with self._lock:
            self._tracks.pop(track_id, None)

    def needs_more(self, track_id: int) -> bool:
        """True while the track is undecided or its last observation disagrees with its state."""
        with self._lock:
            track = self._tracks.get(track_id)
            if track is None or track.identity.state == PENDING:
                return True
            last = track.history[-1]
            if track.identity.state == KNOWN:
                return not (last.kind == SUPPORT and last.name == track.identity.name)
            return last.kind == SUPPORT  # unknown / unsure: only while a frame points at someone

    def state(self, track_id: int) -> str:
        """The track's verdict state now (pending for a track never observed)."""
        with self._lock:
            return self._current(track_id).state
