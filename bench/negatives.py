"""What one negative ("not <person>", kept by the gallery from the review queue) does to acceptance.

On ../shared/data/faces (every photo encoded once, cached): each identity X in turn is a stranger to an index of
everyone else; the closest-stranger pair is the stranger photo s* and the enrolled person B* nearest to it
(as the matcher judges: nearest photo or mean encoding). Then ONE negative of B* is added: another photo of s*'s
person (a different frame of the same stranger, as the review queue would give), or s* itself when that person
has one photo. Counted before and after, in the same run:

- s* accepted as B*;
- every other stranger probe (each photo of each identity against the index without that identity) and every
  genuine probe (each photo against the index without that photo, leave-one-out): how many change verdict.

Per-frame open-set evidence (`recognizer.identity.match.evidence`), at the product's defaults and at a loose
operating point (accept 0.60, margin 0, one vote) and a permissive one (tolerance 0.70, accept 0.65) where the
closest stranger IS accepted, so the negative's effect is seen even where the defaults already refuse s*.

    python -m bench.negatives [--data ../shared/data] [--cache DIR]
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recognizer.identity.index import MODEL_ID, FaceIndex
from recognizer.identity.match import SUPPORT, OpenSetParams, evidence

log = logging.getLogger("bench.negatives")
LOOSE = OpenSetParams(accept_distance=0.6, margin=0.0, min_votes=1)
PERMISSIVE = OpenSetParams(tolerance=0.7, accept_distance=0.65, margin=0.0, min_votes=1)  # the closest stranger passes


@dataclass(frozen=True)
class Effect:
    params: OpenSetParams
    stranger: str  # s*'s photo
    person: str  # B*
    distance: float
    negative: str  # the photo kept as NOT B*
    before: bool  # s* accepted as B* before the negative
    after: bool
    same_stranger_before: int  # s*'s person's other photos accepted as B*
    same_stranger_after: int
    strangers: int  # other stranger probes
    strangers_changed: int
    strangers_accepted: int
    genuine: int
    genuine_changed: int
    genuine_accepted: int


def _index(names, encs, sources, neg_names=(), negs=None) -> FaceIndex:  # noqa: ANN001
    return FaceIndex(tuple(names), np.asarray(encs, np.float32).reshape(-1, 128), tuple(sources), MODEL_ID, "",
                     tuple(neg_names), None if negs is None else np.asarray(negs, np.float32).reshape(-1, 128))


def _verdicts(names, encs, sources, params, neg=None) -> tuple[dict, dict]:  # noqa: ANN001
    """(stranger verdicts, genuine verdicts): photo -> accepted person or None."""
    names = np.array(names)
    neg_names, negs = ((neg[0],), neg[1][None, :]) if neg else ((), None)
    strangers, genuine = {}, {}
    for x in sorted(set(names)):
        keep = names != x
        ix = _index(names[keep], encs[keep], np.array(sources)[keep], neg_names, negs)
        for i in np.flatnonzero(~keep):
            ev = evidence(ix, encs[i][None, :], params)[0]
            strangers[sources[i]] = (ev.name if ev.kind == SUPPORT else None, ev.name, ev.distance)
    for i in range(len(names)):
        keep = np.arange(len(names)) != i
        if names[i] not in set(names[keep]):
            continue  # a person with one photo cannot be a genuine probe
        ix = _index(names[keep], encs[keep], np.array(sources)[keep], neg_names, negs)
        ev = evidence(ix, encs[i][None, :], params)[0]
        genuine[sources[i]] = ev.name if ev.kind == SUPPORT else None
    return strangers, genuine


def negative_effect(names, encs, sources, params: OpenSetParams) -> Effect:  # noqa: ANN001
    names, encs = list(names), np.asarray(encs, np.float32)
    strangers, genuine = _verdicts(names, encs, sources, params)
    star = min(strangers, key=lambda s: strangers[s][2])
    _, person, dist = strangers[star]
    who = names[sources.index(star)]
    others = [s for s, n in zip(sources, names) if n == who and s != star]
    negative = others[0] if others else star
    neg = (person, encs[sources.index(negative)])
    s_after, g_after = _verdicts(names, encs, sources, params, neg)
    same = [s for s in others if s != negative]
    rest = [s for s in strangers if s != star and s not in others]
    return Effect(
        params, star, person, dist, negative, strangers[star][0] == person, s_after[star][0] == person,
        sum(strangers[s][0] == person for s in same), sum(s_after[s][0] == person for s in same),
        len(rest), sum(strangers[s][0] != s_after[s][0] for s in rest), sum(strangers[s][0] is not None for s in rest),
        len(genuine), sum(genuine[s] != g_after[s] for s in genuine), sum(genuine[s] is not None for s in genuine))


def main(argv: list[str] | None = None) -> int:
    from bench.accuracy import _engine, data_dir
    from recognizer.tools.calibrate import encode_folder

    ap = argparse.ArgumentParser(prog="python -m bench.negatives", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "facemon-negatives-cache",
                    help="where the encodings of the data set are cached between runs (default: the temp folder)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    faces = data_dir(args.data) / "faces"
    if not faces.is_dir():
        print(f"no data at {faces}", file=sys.stderr)
        return 2
    photos = encode_folder(faces, _engine, args.cache)
    print(f"{len(photos.names)} photos of {len(set(photos.names))} people")
    for label, params in (("defaults", OpenSetParams()), ("loose", LOOSE), ("permissive", PERMISSIVE)):
        e = negative_effect(photos.names, photos.encodings, list(photos.sources), params)
        short = lambda p: "/".join(Path(p).parts[-2:])  # noqa: E731
        print(f"\n[{label}] accept {params.accept_distance} margin {params.margin} min_votes {params.min_votes}")
        print(f"closest stranger pair: {short(e.stranger)} -> {e.person} at {e.distance:.3f}; negative: {short(e.negative)}")
        print(f"  s* accepted as {e.person}: before {e.before}, after {e.after}")
        print(f"  other photos of that stranger accepted as {e.person}: before {e.same_stranger_before}, after {e.same_stranger_after}")
        print(f"  other stranger probes: {e.strangers} ({e.strangers_accepted} accepted before), verdicts changed: {e.strangers_changed}")
        print(f"  genuine probes (leave-one-out): {e.genuine} ({e.genuine_accepted} accepted before), verdicts changed: {e.genuine_changed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
