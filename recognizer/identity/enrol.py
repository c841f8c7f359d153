"""Enrolment: known faces as images in `known_faces/<name>/*.jpg`, built into the index in `encodings/`.

`facemon-enrol` builds the whole index from the folder (also importing the seeds' flat
`name1.jpg … name6.jpg` files); `Enroller` adds one captured face while the recognizer runs. With a data key
the photos a Capture keeps are sealed at rest (same file name, `shared.sealed_files`), and the folder's
readers open sealed and plain photos alike.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Collection, Iterable, Optional, Sequence

import cv2
import numpy as np

from recognizer.identity.gallery import GalleryClient, GalleryError, GalleryStore, Provenance, photo_digest
from recognizer.identity.index import FaceIndex, IndexStore, save_index
from recognizer.identity.lookalike import Lookalike, find_lookalike, lookalike_refusal, shared_faces
from recognizer.identity.match import OpenSetParams
from recognizer.vision.detect import Detection, FaceEngine
from recognizer.vision.imageio import BadImage, decode_image
from shared import sealed_files
from shared.crypto import DataKeyError, KeyRing, load_ring
from shared.http import HttpError
from shared.jpeg import encode_jpeg
from shared.names import InvalidName, validate_name
from shared.lognames import who
from shared.results import Box

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}  # which files are photos; their content says how to decode
MIN_FACE_PX = 60  # smaller faces give unreliable encodings
CAPTURE_MIN_FRACTION = 0.15  # a captured face fills at least this share of the frame's shorter side
STRAY_MAX_SIZE_RATIO = 0.5  # a detection this much smaller than the main face ...
STRAY_MAX_SCORE = 0.5  # ... and scoring below this (HOG margin) is not a second person
ENROL_UPSAMPLE = 1  # enrolment photos are few: look harder for smaller faces
PHOTO_PURPOSE = "photo"  # what a sealed known_faces photo is sealed for (shared.crypto's associated data)
_FLAT = re.compile(r"^(?P<name>.+?)[ _-]?\d+$")


class EnrolRefused(ValueError):
    """An image that cannot be enrolled, with the reason a user can act on."""


@dataclass(frozen=True)
class EnrolmentRules:
    """What a face must be like to be enrolled. Sizes in pixels of the box's shorter side.

    `min_fraction`: the face must also fill this share of the image's shorter side (a camera capture:
    the person meant sits close; a small face far off is someone else). `refuse_at_edge`: a face whose
    box reaches the border of the picture is cut off, and may not be the person the operator sees.
    """

    min_face_px: int = MIN_FACE_PX
    min_fraction: float = 0.0
    refuse_at_edge: bool = False


FOLDER_RULES = EnrolmentRules()  # photos chosen by hand for known_faces/
CAPTURE_RULES = EnrolmentRules(min_fraction=CAPTURE_MIN_FRACTION, refuse_at_edge=True)  # the Capture button


def is_stray(candidate: Detection, dominant: Detection) -> bool:
    """True when `candidate` is not a person next to `dominant`: much smaller and weakly scored.

    A face at most STRAY_MAX_SIZE_RATIO of the dominant one's size, scoring below STRAY_MAX_SCORE
    while the dominant one scores at least that, is a pattern in the background (measured: a 44 px,
    0.10 detection in a dark background beside a 224 px, 2.0 face); two real faces are both kept.
    """
    return (candidate.size <= STRAY_MAX_SIZE_RATIO * dominant.size
            and candidate.score < STRAY_MAX_SCORE <= dominant.score)


def choose_enrolment_face(detections: Sequence[Detection], shape: tuple[int, ...],
                          rules: EnrolmentRules = FOLDER_RULES) -> Detection:
    """The one face to enrol among `detections` (largest first) in an image of `shape`; EnrolRefused otherwise."""
    if not detections:
        raise EnrolRefused("no face found in the image")
    dominant = max(detections, key=lambda d: d.size)
    people = [d for d in detections if d is dominant or not is_stray(d, dominant)]
    if len(people) > 1:
        raise EnrolRefused(f"{len(people)} faces in the image; exactly one person must be in view")
    if len(detections) > 1:
        log.info("enrolment: ignored %d small low-score detection(s) beside a %d px face",
                 len(detections) - 1, dominant.size)
    if rules.refuse_at_edge and dominant.at_edge:
        raise EnrolRefused("the face is cut by the edge of the picture; the whole face must be in view")
    need = max(rules.min_face_px, int(rules.min_fraction * min(shape[:2])))
    if dominant.size < need:
        raise EnrolRefused(f"the face is {dominant.size} px, smaller than {need} px; come closer to the camera")
    return dominant


def face_encoding_for_enrolment(engine: FaceEngine, bgr: np.ndarray,
                                rules: EnrolmentRules = FOLDER_RULES) -> tuple[np.ndarray, Detection]:
    """The (128,) encoding of the one face in `bgr` and its detection; EnrolRefused if there is none,
    several, or it breaks `rules` (too small, cut by the edge)."""
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    face = choose_enrolment_face(engine.detect_scored(rgb, upsample=ENROL_UPSAMPLE), rgb.shape, rules)
    return engine.encode(rgb, [face.box])[0], face


def face_crop_jpeg(bgr: np.ndarray, box: Box, margin: float = 0.3, max_side: int = 240, quality: int = 90) -> bytes:
    """A JPEG of the face at `box` with `margin` (share of the box) around it, at most `max_side` px: what was enrolled."""
    top, right, bottom, left = box
    h, w = bgr.shape[:2]
    dy, dx = int((bottom - top) * margin), int((right - left) * margin)
    crop = bgr[max(0, top - dy) : min(h, bottom + dy), max(0, left - dx) : min(w, right + dx)]
    scale = max_side / max(crop.shape[:2])
    if scale < 1.0:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    return encode_jpeg(crop, quality)


def collect_known_faces(root: Path) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """Images per person under `root`: `<name>/*.jpg` folders, and flat `name1.jpg` files (the seeds' naming).

    Returns (images by name, skipped paths with the reason).
    """
    root = Path(root)
    people: dict[str, list[Path]] = {}
    skipped: list[tuple[Path, str]] = []
    if not root.is_dir():
        raise FileNotFoundError(f"known-faces folder not found: {root}")
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            try:
                name = validate_name(entry.name, "folder name")
            except InvalidName as exc:
                skipped.append((entry, str(exc)))
                continue
            files = sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                skipped.append((entry, "folder holds no .jpg/.jpeg/.png images"))
            people.setdefault(name, []).extend(files)
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            m = _FLAT.match(entry.stem)
            stem = m.group("name") if m else entry.stem
            try:
                people.setdefault(validate_name(stem, "file name"), []).append(entry)
            except InvalidName as exc:
                skipped.append((entry, str(exc)))
    return people, skipped


def read_photo(path: Path, ring: Optional[KeyRing] = None) -> bytes:
    """A known-face photo's image bytes, sealed or plain (OSError; DataKeyError when sealed and `ring` cannot open)."""
    return sealed_files.read(path, ring, PHOTO_PURPOSE)


def build_index(
    engine: FaceEngine,
    root: Path,
    progress: Optional[Callable[[int, int, Path], None]] = None,
    ring: Optional[KeyRing] = None,
) -> tuple[FaceIndex, list[tuple[Path, str]]]:
    """Encode every known-face image (sealed ones opened with `ring`); return the index and the skipped images with
    reasons."""
    people, skipped = collect_known_faces(root)
    jobs = [(name, path) for name, paths in people.items() for path in paths]
    index = FaceIndex.empty()
    for i, (name, path) in enumerate(jobs):
        if progress:
            progress(i, len(jobs), path)
        try:
            encoding, _ = face_encoding_for_enrolment(engine, decode_image(read_photo(path, ring)))
        except (OSError, BadImage, EnrolRefused, DataKeyError) as exc:
            skipped.append((path, str(exc)))
            continue
        index = index.add(name, encoding[None, :], [str(path)])
    if progress:
        progress(len(jobs), len(jobs), Path(""))
    enrolled = set(index.people)
    for name, paths in people.items():
        if paths and name not in enrolled:  # every image of this person was skipped: say so by name
            folder = paths[0].parent if paths[0].parent != Path(root) else Path(root) / name
            reason = f"no usable image for {name!r}: all {len(paths)} skipped, so {name!r} is not enrolled"
            log.warning("%s (%s)", reason, folder)
            skipped.append((folder, reason))
    return index, skipped


@dataclass(frozen=True)
class EnrolOutcome:
    ok: bool
    reason: str
    name: str = ""
    count: int = 0  # encodings of that person after enrolment
    box: Optional[Box] = None  # where the enrolled face is in the captured frame
    crop: bytes = b""  # JPEG of the enrolled face, for the operator to check
    code: str = ""  # a refusal's machine-readable reason: "looks_like" (confirmable by an admin)
    lookalike: Optional[Lookalike] = None  # who the face looks like (refused, or enrolled with a confirmation)


class Enroller:
    """The one enrolment: a photo → exactly one face → its encoding, into the store with its provenance.

    Used by a Capture on any node (`StationSession`) and by `facemon-enrol`'s import into the dashboard's
    gallery. With a lab's `IndexStore` the photo is kept under known_faces/<name>/; with a pool's
    `GalleryStore` it goes to the dashboard as the enrolled face's crop, with who, where and which grant.
    A face within `accept_distance` of someone else enrolled is refused (`lookalike.py`) unless confirmed.
    """

    def __init__(self, engine: FaceEngine, store: IndexStore | GalleryStore, known_faces: Path,
                 accept_distance: float = 0.58) -> None:
        self.engine = engine
        self.store = store
        self.known_faces = Path(known_faces)
        self.accept_distance = accept_distance  # the recognizer's: a face this close to someone else is refused
        self._lock = threading.Lock()

    def enrol(self, raw_name: object, image: bytes, by: str = "", provenance: Optional[Provenance] = None,
              rules: EnrolmentRules = CAPTURE_RULES, confirm_lookalike: str = "") -> EnrolOutcome:
        """Validate, find exactly one face, refuse a lookalike of someone else (unless `confirm_lookalike` names
        exactly that person), encode, persist. Never raises for bad input or an unreachable gallery."""
        try:
            name = validate_name(raw_name)
            bgr = decode_image(image)
            encoding, face = face_encoding_for_enrolment(self.engine, bgr, rules)
        except (InvalidName, BadImage, EnrolRefused) as exc:
            log.info("enrolment of %s refused%s: %s", who(raw_name), f" (from {by})" if by else "", exc)
            return EnrolOutcome(False, str(exc))
        crop = face_crop_jpeg(bgr, face.box)
        prov = replace(provenance or Provenance(by=by), photo_sha256=photo_digest(image), photo=crop)
        with self._lock:  # checked under the lock: two captures at once cannot both pass as "nobody alike"
            found = find_lookalike(self.store.index, encoding, name, self.accept_distance)
            refusal = lookalike_refusal(found, confirm_lookalike)
            if refusal is not None:
                log.warning("enrolment of %s refused%s: %s", who(name), f" (from {by or prov.by})" if by or prov.by else "", refusal)
                return EnrolOutcome(False, refusal, name, code="looks_like", lookalike=found, box=face.box, crop=crop)
            source = prov.source
            if self.store.local_photos:
                stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
                folder = self.known_faces / name
                path = folder / f"capture-{stamp}.jpg"
                folder.mkdir(parents=True, exist_ok=True)
                sealed_files.write(path, encode_jpeg(bgr, 95), getattr(self.store, "ring", None), PHOTO_PURPOSE)
                source = str(path)
            try:
                index = self.store.add(name, encoding[None, :], [source], provenance=prov)
            except (GalleryError, HttpError) as exc:
                log.warning("enrolment of %s not stored: the gallery refused or did not answer: %s", who(name), exc)
                return EnrolOutcome(False, f"the gallery could not store it ({exc}); try again")
        count = sum(1 for n in index.names if n == name)
        confirmed = f"; {found.message()}, confirmed deliberately" if found is not None else ""
        (log.warning if found else log.info)("enrolled %s from %s%s (%d images of them now)%s", who(name),
                                             source or "a capture", f" by {by or prov.by}" if by or prov.by else "",
                                             count, confirmed)
        return EnrolOutcome(True, f"enrolled {name} ({count} image{'s' if count != 1 else ''}){confirmed}", name,
                            count, face.box, crop, lookalike=found)


def import_folder(enroller: Enroller, root: Path, by: str,
                  progress: Optional[Callable[[int, int, Path], None]] = None,
                  confirmed: Collection[frozenset[str]] = ()) -> tuple[int, list[tuple[Path, str]]]:
    """Enrol every known-face image through `enroller` (into the dashboard's gallery); (enrolled, skipped with why).

    The same photo imported again is stored once (the gallery keys encodings by person and photo digest). A photo
    refused as a lookalike is enrolled after all when its pair of names is in `confirmed` (--confirm-lookalike)."""
    people, skipped = collect_known_faces(root)
    jobs = [(name, path) for name, paths in people.items() for path in paths]
    done = 0
    for i, (name, path) in enumerate(jobs):
        if progress:
            progress(i, len(jobs), path)
        try:
            image = read_photo(path, getattr(enroller.store, "ring", None))
        except (OSError, DataKeyError) as exc:
            skipped.append((path, str(exc)))
            continue
        provenance = Provenance(by=by, source=str(path.relative_to(root)))
        outcome = enroller.enrol(name, image, provenance=provenance, rules=FOLDER_RULES)
        alike = outcome.lookalike
        if outcome.code == "looks_like" and alike is not None and frozenset((name, alike.name)) in confirmed:
            outcome = enroller.enrol(name, image, provenance=provenance, rules=FOLDER_RULES, confirm_lookalike=alike.name)
        if outcome.ok:
            done += 1
        else:
            skipped.append((path, outcome.reason))
    if progress:
        progress(len(jobs), len(jobs), Path(""))
    return done, skipped


def _progress_bar(i: int, n: int, path: Path) -> None:
    """A bar redrawn in place: only for a terminal (carriage returns would litter a log)."""
    width = 30
    done = int(width * i / max(n, 1))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {path.name[:40]:<40}")
    if i >= n:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _progress_lines(i: int, n: int, path: Path) -> None:
    """Progress for a log (not a terminal): one plain line per tenth of the images, and at the end."""
    step = max(1, n // 10)
    if i >= n:
        sys.stderr.write(f"facemon-enrol: {n}/{n} images done\n")
    elif i % step == 0:
        sys.stderr.write(f"facemon-enrol: {i}/{n} images, now {path}\n")


def progress_for(stream) -> Callable[[int, int, Path], None]:  # noqa: ANN001 - a text stream
    """The bar on a terminal, plain lines otherwise."""
    return _progress_bar if stream.isatty() else _progress_lines


def _env(name: str) -> str:
    """FACEMON_ENROL_<name>, or the old spelling FACEMON_ENROLL_<name> (still read; not documented)."""
    return os.environ.get(f"FACEMON_ENROL_{name}") or os.environ.get(f"FACEMON_ENROLL_{name}", "")


def main(argv: Optional[Iterable[str]] = None) -> int:
    """Console entry `facemon-enrol`: build encodings/ from known_faces/."""
    from shared.fsmode import private_umask

    private_umask()  # encodings and photos are biometric data: 0600 files in 0700 folders
    from recognizer.vision.detect import EngineConfig

    parser = argparse.ArgumentParser(
        prog="facemon-enrol",
        description="Build the face index (encodings/index.npz + index.json) from known_faces/<name>/*.jpg "
        "(flat name1.jpg files are imported too). Lists every image it skipped and why.",
    )
    parser.add_argument("--known-faces", type=Path, default=Path("known_faces"), help="folder of known people (default: %(default)s)")
    parser.add_argument("--index", type=Path, default=Path("encodings"), help="output folder for the index (default: %(default)s)")
    parser.add_argument("--detector", choices=("hog", "cnn"), default="hog", help="face detector (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress (a bar on a terminal, lines otherwise)")
    parser.add_argument("--dashboard-url", default=_env("DASHBOARD_URL"),
                        help="import the folder into this dashboard's gallery (a pool's one gallery) instead of "
                        "building --index (env FACEMON_ENROL_DASHBOARD_URL)")
    parser.add_argument("--dashboard-token", default=_env("DASHBOARD_TOKEN"),
                        help="a service token of that dashboard (env FACEMON_ENROL_DASHBOARD_TOKEN)")
    parser.add_argument("--confirm-lookalike", action="append", default=[], metavar="NAME,OTHER",
                        help="two people whose photos look alike (within the recognizer's accept distance) are "
                        "refused, as Capture refuses them; after checking they are two people, name the pair here "
                        "to build anyway (repeatable)")
    parser.add_argument("--accept-distance", type=float, default=OpenSetParams().accept_distance,
                        help="the recognizer's accept distance, which the lookalike rule uses (default: %(default)s)")
    parser.add_argument("--data-key-file", default=os.environ.get("FACEMON_RECOGNIZER_DATA_KEY_FILE", ""),
                        help="seal the index at rest with this 0600 key file (and open sealed photos with it); the "
                        "recognizer's key (env FACEMON_RECOGNIZER_DATA_KEY_FILE, or FACEMON_DATA_KEY)")
    parser.add_argument("--by", default=os.environ.get("USER", "") or "facemon-enrol",
                        help="who the imported encodings are recorded as enrolled by (default: $USER)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.dashboard_url and not args.dashboard_token:
        print("facemon-enrol: --dashboard-url needs --dashboard-token (a service token: python -m dashboard "
              "add-station --station-id enrol --kind service)", file=sys.stderr)
        return 2
    progress = None if args.quiet else progress_for(sys.stderr)
    try:
        ring = load_ring(args.data_key_file)
        confirmed = [_pair(text) for text in args.confirm_lookalike]
    except (DataKeyError, ValueError) as exc:
        print(f"facemon-enrol: {exc}", file=sys.stderr)
        return 2
    try:
        engine = FaceEngine(EngineConfig(detector=args.detector))
        if args.dashboard_url:
            return _import(engine, args, progress, ring, confirmed)
        index, skipped = build_index(engine, args.known_faces, progress, ring)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"facemon-enrol: {exc}", file=sys.stderr)
        return 2
    alike = shared_faces(index, args.accept_distance)
    refused = [a for a in alike if a.pair() not in confirmed]
    for a in alike:
        if a not in refused:
            log.warning("%s: confirmed deliberately (--confirm-lookalike)", a.message())
    if refused:
        print(f"facemon-enrol: refused, {args.index}/ left as it was: two people's folders hold one face, so the "
              "recognizer would confuse them (either name would be 'not sure', or raise wrong_person at the other's "
              "desk):", file=sys.stderr)
        for a in refused:
            print(f"  {a.message()}", file=sys.stderr)
        print("Remove the photo from the wrong folder; or, if they really are two people, build with "
              + " ".join(f"--confirm-lookalike {a.name},{a.other}" for a in refused), file=sys.stderr)
        return 2
    save_index(index, args.index, ring)
    print(f"indexed {len(index)} images of {len(index.people)} people into {args.index}/")
    for name in index.people:
        print(f"  {name}: {index.names.count(name)}")
    _print_skipped(skipped)
    return 0 if len(index) else 1


def _pair(text: str) -> frozenset[str]:
    """`--confirm-lookalike NAME,OTHER` as an unordered pair; ValueError for anything else."""
    names = [validate_name(n.strip()) for n in text.split(",")] if text.count(",") == 1 else []
    if len(set(names)) != 2:
        raise ValueError(f"--confirm-lookalike takes two different names as NAME,OTHER, not {text!r}")
    return frozenset(names)


def _import(engine: FaceEngine, args: argparse.Namespace, progress, ring: Optional[KeyRing],  # noqa: ANN001
            confirmed: Collection[frozenset[str]]) -> int:
    """facemon-enrol --dashboard-url: the folder into the dashboard's gallery, through the one Enroller."""
    store = GalleryStore(GalleryClient(args.dashboard_url, args.dashboard_token), args.index, ring=ring)
    done, skipped = import_folder(Enroller(engine, store, args.known_faces), args.known_faces, args.by, progress,
                                  confirmed)
    print(f"imported {done} images into the gallery of {args.dashboard_url} (a photo imported before is kept once)")
    _print_skipped(skipped)
    return 0 if done else 1


def _print_skipped(skipped: list[tuple[Path, str]]) -> None:
    if skipped:
        print(f"skipped {len(skipped)}:")
        for path, reason in skipped:
            print(f"  {path}: {reason}")


if __name__ == "__main__":
    sys.exit(main())
