"""`facemon-calibrate`: measure the open-set trade-off on a folder of known people and recommend settings.

Protocol (per image, one photo = one observation): for each random split, a share of the identities
is held out as strangers (never enrolled); every other person enrols `k` photos (at most all but one,
so each keeps a probe where possible) and the rest of their photos are genuine probes. Every probe is
decided by the seeds' vote and by the open-set frame rule for a grid of settings. Reported:

- genuine accept (GAR): genuine probes named correctly;
- misidentification (MIS): genuine probes named as someone else;
- false accept (FAR): stranger probes named as anyone (the intruder the monitor misses).

Per-track accumulation (N of M) cannot be measured on single photos without inventing frames, so
these figures are per image; the per-track layer only makes a video decision stricter and steadier.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from recognizer.identity.enrol import IMAGE_SUFFIXES
from recognizer.identity.index import DIM, FaceIndex
from recognizer.identity.match import SUPPORT, OpenSetParams, evidence
from recognizer.settings import as_flags
from recognizer.tools.seeds import MatchParams, vote

log = logging.getLogger(__name__)

CACHE_NAME = "facemon-calibrate-encodings.npz"
MAX_SIDE = 1024  # px: photos are shrunk to this before detection (speed; chips are 150 px anyway)
TARGET_FAR = 0.01
TUNED = ("accept_distance", "margin", "min_votes", "person_slack")  # the OpenSetParams fields the grid varies


class CalibrationError(Exception):
    """The folder cannot be calibrated on (missing, too few people or photos)."""


@dataclass(frozen=True)
class Photos:
    """Encodings of the usable photos of a folder, one per photo, with the skipped ones and why."""

    names: tuple[str, ...]
    encodings: np.ndarray  # (n,128) float32
    sources: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (path, reason)


def list_photos(known_dir: Path) -> list[tuple[str, Path]]:
    """(person, path) for every image in KNOWN_DIR/<person>/, sorted."""
    known_dir = Path(known_dir)
    if not known_dir.is_dir():
        raise CalibrationError(f"{known_dir} is not a folder of people (expected {known_dir}/<name>/*.jpg)")
    return [(d.name, f) for d in sorted(known_dir.iterdir()) if d.is_dir()
            for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]


def _cache_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_cache(cache_dir: Optional[Path]) -> dict[str, tuple[str, np.ndarray]]:
    if cache_dir is None or not (Path(cache_dir) / CACHE_NAME).exists():
        return {}
    try:
        with np.load(Path(cache_dir) / CACHE_NAME, allow_pickle=False) as z:
            return {str(k): (str(s), e) for k, s, e in zip(z["keys"], z["status"], z["encodings"])}
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable encoding cache in %s: %s", cache_dir, exc)
        return {}


def _save_cache(cache_dir: Optional[Path], cache: dict[str, tuple[str, np.ndarray]]) -> None:
    if cache_dir is None:
        return
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    keys = sorted(cache)
    np.savez(Path(cache_dir) / CACHE_NAME, keys=np.array(keys, dtype=str),
             status=np.array([cache[k][0] for k in keys], dtype=str),
             encodings=np.stack([cache[k][1] for k in keys]).astype(np.float32) if keys else np.zeros((0, DIM)))


def encode_photo(engine, path: Path) -> tuple[str, np.ndarray]:
    """("ok", encoding) for a photo with exactly one face, else (reason, zeros)."""
    import cv2  # heavy-ish: only when photos are actually encoded

    from recognizer.vision.imageio import BadImage, decode_image  # the same decoding as facemon-enrol

    none = np.zeros(DIM, np.float32)
    try:
        bgr = decode_image(path.read_bytes())
    except (OSError, BadImage) as exc:
        return f"unreadable ({exc})", none
    scale = MAX_SIDE / max(bgr.shape[:2])
    if scale < 1.0:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    boxes = engine.detect(rgb, upsample=0) or engine.detect(rgb, upsample=1)
    if not boxes:
        return "no face", none
    if len(boxes) > 1:
        return f"{len(boxes)} faces", none
    return "ok", engine.encode(rgb, boxes)[0]


def encode_folder(known_dir: Path, engine_factory: Callable[[], object], cache_dir: Optional[Path] = None) -> Photos:
    """Encode every photo of KNOWN_DIR/<person>/ once (reusing the .npz cache by file content)."""
    photos = list_photos(known_dir)
    cache = _load_cache(cache_dir)
    engine = None
    names, encs, sources, skipped = [], [], [], []
    for i, (person, path) in enumerate(photos):
        key = _cache_key(path)
        if key not in cache:
            engine = engine or engine_factory()
            cache[key] = encode_photo(engine, path)
            log.info("encoded %d/%d %s: %s", i + 1, len(photos), path, cache[key][0])
        status, enc = cache[key]
        if status == "ok":
            names.append(person), encs.append(enc), sources.append(str(path))
        else:
            skipped.append((str(path), status))
    if engine is not None:
        _save_cache(cache_dir, cache)
    return Photos(tuple(names), np.array(encs, np.float32).reshape(-1, DIM), tuple(sources), tuple(skipped))


@dataclass(frozen=True)
class Split:
    """One random split: the enrolled index, genuine probes (with their names) and stranger probes."""

    index: FaceIndex
    genuine: np.ndarray  # (g,128)
    genuine_names: tuple[str, ...]
    strangers: np.ndarray  # (s,128)


def make_splits(photos: Photos, k: int, stranger_share: float, n_splits: int, seed: int,
                probes: Optional[np.ndarray] = None) -> list[Split]:
    """Random open-set splits: `stranger_share` of identities never enrolled, `k` photos enrolled per person.

    `probes` (n,128), one per photo in `photos` order: what is matched instead of the enrolled encodings of the
    probe photos (e.g. the same photos as a poor desk camera sees them); enrolment always uses `photos`.
    """
    seen = photos.encodings if probes is None else np.asarray(probes, np.float32)
    people = sorted(set(photos.names))
    if len(people) < 3:
        raise CalibrationError(f"need at least 3 people to calibrate, found {len(people)}")
    n_strangers = min(max(1, round(stranger_share * len(people))), len(people) - 2)
    names = np.array(photos.names)
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(n_splits):
        strangers = set(rng.choice(people, n_strangers, replace=False))
        index, gen, gen_names, strange = FaceIndex.empty(), [], [], []
        for person in people:
            rows = np.flatnonzero(names == person)
            if person in strangers:
                strange.extend(rows)
                continue
            rows = rng.permutation(rows)
            n_enrol = min(k, len(rows) - 1) if len(rows) > 1 else 1  # keep a probe where there is one
            index = index.add(person, photos.encodings[rows[:n_enrol]], [photos.sources[r] for r in rows[:n_enrol]])
            gen.extend(rows[n_enrol:])
            gen_names.extend([person] * (len(rows) - n_enrol))
        splits.append(Split(index, seen[gen].reshape(-1, DIM), tuple(gen_names), seen[strange].reshape(-1, DIM)))
    return splits


@dataclass(frozen=True)
class Rates:
    """Pooled counts over splits and the rates (0–1) that follow; `far_worst` is the worst single split."""

    genuine: int
    correct: int
    wrong: int
    strangers: int
    false_accepts: int
    far_worst: float

    @property
    def gar(self) -> float:
        return self.correct / self.genuine if self.genuine else float("nan")

    @property
    def mis(self) -> float:
        return self.wrong / self.genuine if self.genuine else float("nan")

    @property
    def far(self) -> float:
        return self.false_accepts / self.strangers if self.strangers else float("nan")


Decider = Callable[[FaceIndex, np.ndarray], list]  # -> accepted name or None per encoding


def seeds_decider(tolerance: float = 0.6) -> Decider:
    """The seeds' rule: any vote within `tolerance` names the most voted person."""
    params = MatchParams(tolerance)
    return lambda index, enc: [m.name for m in vote(index, enc, params)]


def openset_decider(params: OpenSetParams) -> Decider:
    """Our per-frame rule: a name only when the frame's evidence is accepted (support)."""
    return lambda index, enc: [e.name if e.kind == SUPPORT else None for e in evidence(index, enc, params)]


def evaluate(splits: Sequence[Split], decide: Decider) -> Rates:
    """Pool genuine and stranger outcomes of `decide` over the splits."""
    g = c = w = s = fa = 0
    worst = 0.0
    for sp in splits:
        got = decide(sp.index, sp.genuine) if len(sp.genuine) else []
        c += sum(a == b for a, b in zip(got, sp.genuine_names))
        w += sum(a is not None and a != b for a, b in zip(got, sp.genuine_names))
        g += len(sp.genuine_names)
        named = sum(n is not None for n in decide(sp.index, sp.strangers)) if len(sp.strangers) else 0
        fa += named
        s += len(sp.strangers)
        worst = max(worst, named / len(sp.strangers) if len(sp.strangers) else 0.0)
    return Rates(g, c, w, s, fa, worst)


@dataclass(frozen=True)
class Setting:
    """One row of the table: a label and either the seeds' tolerance or our parameters."""

    label: str
    params: Optional[OpenSetParams] = None
    seeds_tolerance: Optional[float] = None

    def decider(self) -> Decider:
        return openset_decider(self.params) if self.params else seeds_decider(self.seeds_tolerance or 0.6)


def default_grid(base: OpenSetParams = OpenSetParams()) -> list[Setting]:
    """The seeds' rule at 0.6 and 0.5, then our rule over accept distance x margin x min votes x slack."""
    rows = [Setting("seeds", seeds_tolerance=0.6), Setting("seeds", seeds_tolerance=0.5)]
    for accept in (0.40, 0.42, 0.44, 0.46, 0.48, 0.50, 0.52, 0.54, 0.56, 0.58, 0.60):
        for margin in (0.0, 0.05, 0.10):
            for min_votes in (1, 2):
                for slack in (0.0, 0.03):
                    p = replace(base, accept_distance=accept, margin=margin, min_votes=min_votes, person_slack=slack)
                    rows.append(Setting("open-set", params=p))
    return rows


def describe(s: Setting) -> str:
    """Short text of a setting's parameters."""
    if s.params is None:
        return f"tolerance={s.seeds_tolerance:.2f}"
    p = s.params
    return f"accept={p.accept_distance:.2f} margin={p.margin:.2f} min_votes={p.min_votes} slack={p.person_slack:.2f}"


def recommended_flags(p: OpenSetParams) -> str:
    """The recognizer flags that set `p`'s thresholds (only settings that exist: recognizer/settings.py)."""
    return as_flags({f"match.{name}": getattr(p, name) for name in TUNED})


def _distance_to_default(p: OpenSetParams) -> float:
    d = OpenSetParams()
    return (abs(p.accept_distance - d.accept_distance) / 0.02 + abs(p.margin - d.margin) / 0.05
            + abs(p.min_votes - d.min_votes) + abs(p.person_slack - d.person_slack) / 0.03)


def recommend(results: Sequence[tuple[Setting, Rates]], target_far: float = TARGET_FAR) -> Optional[tuple[Setting, Rates]]:
    """The open-set setting with the best genuine accept among those with pooled FAR ≤ target.

    Ties go to lower FAR, then lower misidentification, then the strictest setting (a folder of a few
    people shows few strangers, so of settings it cannot tell apart the one farthest from accepting a
    stranger is kept: lowest accept distance, then most votes, widest margin, least slack).
    """
    ok = [(s, r) for s, r in results if s.params is not None and r.far <= target_far]
    if not ok:
        return None
    return min(ok, key=lambda sr: (-sr[1].gar, sr[1].far, sr[1].mis, _strictness(sr[0].params)))


def _strictness(p: OpenSetParams) -> tuple[float, ...]:
    return (p.accept_distance, -p.min_votes, -p.margin, p.person_slack)


def pareto(results: Sequence[tuple[Setting, Rates]]) -> list[tuple[Setting, Rates]]:
    """Open-set rows not beaten on both genuine accept and false accept by another row."""
    ours = [(s, r) for s, r in results if s.params is not None]
    front = []
    for s, r in ours:
        beaten = any((o.gar >= r.gar and o.far <= r.far) and (o.gar > r.gar or o.far < r.far) for _, o in ours)
        if not beaten:
            front.append((s, r))
    seen, unique = set(), []
    for s, r in sorted(front, key=lambda sr: (sr[1].far, -sr[1].gar, _distance_to_default(sr[0].params))):
        if (r.gar, r.far) not in seen:  # one row per distinct operating point: the one nearest the defaults
            seen.add((r.gar, r.far))
            unique.append((s, r))
    return unique


def format_table(rows: Iterable[tuple[Setting, Rates]]) -> str:
    """A plain-text table of settings and their rates in percent."""
    lines = [f"{'rule':<9} {'settings':<52} {'GAR%':>6} {'MIS%':>6} {'FAR%':>6} {'FARmax%':>8}"]
    for s, r in rows:
        lines.append(f"{s.label:<9} {describe(s):<52} {100 * r.gar:6.1f} {100 * r.mis:6.1f} "
                     f"{100 * r.far:6.1f} {100 * r.far_worst:8.1f}")
    return "\n".join(lines)


def plot(results: Sequence[tuple[Setting, Rates]], best: Optional[tuple[Setting, Rates]], out: Path,
         title: str = "") -> None:
    """Write the FAR / genuine-accept trade-off as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    ours = [r for s, r in results if s.params is not None]
    ax.scatter([100 * r.far for r in ours], [100 * r.gar for r in ours], s=14, alpha=0.5, label="open-set settings")
    for s, r in results:
        if s.params is None:
            ax.scatter(100 * r.far, 100 * r.gar, marker="s", s=60, label=f"seeds {describe(s)}")
        elif s.params == OpenSetParams():
            ax.scatter(100 * r.far, 100 * r.gar, marker="D", s=60, label="defaults")
    if best is not None:
        ax.scatter(100 * best[1].far, 100 * best[1].gar, marker="*", s=220, label="recommended")
    ax.axvline(100 * TARGET_FAR, linestyle="--", color="grey", label="FAR 1%")
    ax.set_xlabel("strangers falsely accepted (%)")
    ax.set_ylabel("enrolled recognised (%)")
    ax.set_title(title or "open-set trade-off (per image)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def run_grid(splits: Sequence[Split], settings: Sequence[Setting]) -> list[tuple[Setting, Rates]]:
    """Evaluate every setting on the same splits."""
    return [(s, evaluate(splits, s.decider())) for s in settings]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="facemon-calibrate",
        description="Measure genuine accept, misidentification and false accept of strangers on a folder of "
                    "known people (KNOWN_DIR/<name>/*.jpg), for the seeds' rule and a grid of open-set settings, "
                    "and recommend settings (best genuine accept with strangers accepted at most 1%).")
    ap.add_argument("known_dir", type=Path, metavar="KNOWN_DIR", help="folder of people: KNOWN_DIR/<name>/*.jpg")
    ap.add_argument("--k", type=int, default=3, help="photos enrolled per person (default 3)")
    ap.add_argument("--strangers", type=float, default=0.3,
                    help="share of identities held out as never-enrolled strangers (default 0.3)")
    ap.add_argument("--splits", type=int, default=20, help="random splits (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the splits (default 0)")
    ap.add_argument("--plot", type=Path, help="write the trade-off plot to this PNG")
    ap.add_argument("--cache", type=Path, help="folder for an .npz cache of encodings (reused across runs)")
    ap.add_argument("--all", action="store_true", help="print every setting, not only the trade-off front")
    ap.add_argument("-v", "--verbose", action="store_true", help="log each encoded photo")
    return ap


def _engine():
    from recognizer.vision.detect import FaceEngine

    return FaceEngine()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.k < 1 or args.splits < 1 or not 0.0 < args.strangers < 1.0:
        print("facemon-calibrate: --k and --splits must be at least 1, --strangers in (0, 1)", file=sys.stderr)
        return 2
    try:
        photos = encode_folder(args.known_dir, _engine, args.cache)
        splits = make_splits(photos, args.k, args.strangers, args.splits, args.seed)
    except CalibrationError as exc:
        print(f"facemon-calibrate: {exc}", file=sys.stderr)
        return 2
    people = sorted(set(photos.names))
    print(f"{len(photos.names)} photos of {len(people)} people encoded; {len(photos.skipped)} skipped")
    for path, why in photos.skipped:
        print(f"  skipped {path}: {why}")
    sp = splits[0]
    print(f"protocol: {args.splits} splits, k={args.k} enrolled per person, {args.strangers:.0%} of identities as "
          f"strangers; per split ~{len(sp.genuine_names)} genuine and ~{len(sp.strangers)} stranger probes "
          "(figures per image)")
    results = run_grid(splits, default_grid())
    best = recommend(results)
    seeds = [sr for sr in results if sr[0].params is None]
    default = [sr for sr in results if sr[0].params == OpenSetParams()]
    shown = results if args.all else seeds + default + [sr for sr in pareto(results) if sr not in default]
    print(format_table(shown))
    if best is None:
        print(f"no setting keeps strangers falsely accepted at or below {TARGET_FAR:.0%}: enrol more photos per person")
    else:
        p = best[0].params
        print(f"recommended: {describe(best[0])} (GAR {100 * best[1].gar:.1f}%, FAR {100 * best[1].far:.1f}%): "
              f"facemon-recognizer {recommended_flags(p)}")
    if args.plot:
        plot(results, best, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
