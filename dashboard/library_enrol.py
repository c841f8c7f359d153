"""Enrolment from the dashboard's pages (an uploaded photo, a face from the review queue) through the project's one
`Enroller` (recognizer/identity/enrol.py): the same quality gate, the same refusal reasons, the same lookalike
check as a Capture at a desk and facemon-enrol, writing into the dashboard's gallery directly.

The face engine (dlib) is loaded on first use and kept for the app's lifetime; it needs the recognizer's
packages (requirements-server.txt). Without them the page says so and nothing else is affected.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from dashboard import audit, gallery
from dashboard.gallery_models import GalleryEncoding

log = logging.getLogger(__name__)
EXT = "facemon.library_enroller"
_build_lock = threading.Lock()


NOTICE_ACTIONS = ("add_photo", "assign")  # enrolments from the pages that record the admin's notice confirmation


class EnrolUnavailable(RuntimeError):
    """The face engine cannot run in this dashboard (the recognizer's packages are not installed)."""


def gallery_index(db: Session) -> Any:
    """The gallery as the recognizer's `FaceIndex` (positives and negatives), as every node holds it."""
    from recognizer.identity.index import DIM, MODEL_ID, FaceIndex

    rows = db.execute(sa.select(GalleryEncoding.person, GalleryEncoding.vector, GalleryEncoding.source,
                                GalleryEncoding.negative).order_by(GalleryEncoding.id)).all()
    pos = [r for r in rows if not r.negative]
    neg = [r for r in rows if r.negative]

    def stack(rs: list) -> np.ndarray:
        return np.frombuffer(b"".join(r.vector for r in rs), "<f4").reshape(-1, DIM).astype(np.float32)

    return FaceIndex(tuple(r.person for r in pos), stack(pos), tuple(r.source for r in pos), MODEL_ID, "",
                     tuple(r.person for r in neg), stack(neg))


class DatabaseGallery:
    """The store an `Enroller` writes to from the dashboard: the gallery's tables, each add audited."""

    local_photos = False

    def __init__(self, factory: sessionmaker[Session], readers: sessionmaker[Session], on_commit) -> None:  # noqa: ANN001
        self.factory, self.readers, self.on_commit = factory, readers, on_commit
        self.action = threading.local()  # what the current request audits its add as (upload, assign)
        self.notice = threading.local()  # (notice version, confirmed by) the current request records, when any
        self.confirmed = threading.local()  # the lookalike the current request's admin confirmed ("" if none)

    @property
    def index(self) -> Any:
        with self.readers() as db:
            return gallery_index(db)

    def add(self, name: str, encodings: np.ndarray, sources: Sequence[str], provenance: Any = None) -> Any:
        from recognizer.identity.index import MODEL_ID

        action = getattr(self.action, "value", "add_photo")
        confirmed = getattr(self.confirmed, "value", "")
        for encoding, source in zip(np.asarray(encodings, np.float32).reshape(-1, 128), sources):
            new = gallery.NewEncoding(
                person=name, vector=np.asarray(encoding, "<f4").tobytes(), model=MODEL_ID,
                source=(provenance.source or source or "upload")[:256], photo_sha256=provenance.photo_sha256,
                enrolled_by=provenance.by or "unknown", via="dashboard", photo=provenance.photo or None,
                **dict(zip(("notice_version", "notice_confirmed_by"), getattr(self.notice, "value", None) or ())))
            change, created = gallery.add_encoding(
                self.factory, new, also=lambda db: audit.record(db, new.enrolled_by, action, name, new.source + (
                    f"; lookalike of {confirmed} confirmed" if confirmed else "")))
            if created:
                self.on_commit(change["seq"])
        return self.index


@dataclass(frozen=True)
class Outcome:
    ok: bool
    reason: str
    code: str = ""  # a refusal's machine-readable reason: "looks_like" (an admin may confirm it)
    like: str = ""  # looks_like: who the face looks like (the value an admin's confirm_lookalike must carry)


def _enroller(app: Flask) -> Any:
    found = app.extensions.get(EXT)
    if found is not None:
        return found
    with _build_lock:
        if EXT not in app.extensions:
            try:
                from recognizer.identity.enrol import Enroller
                from recognizer.vision.detect import EngineConfig, FaceEngine
                engine = FaceEngine(EngineConfig(detector="hog"))
            except (ImportError, RuntimeError) as exc:
                raise EnrolUnavailable(f"photos cannot be enrolled from this dashboard: the face engine is missing "
                                       f"({exc}); install requirements-server.txt") from None
            from dashboard.gallery_api import notifier
            from dashboard.services import services

            svc = services(app)
            store = DatabaseGallery(svc.writer, svc.sessions, notifier(app).committed)
            app.extensions[EXT] = Enroller(engine, store, Path("known_faces"))
            log.info("face engine loaded for enrolment from the dashboard")
    return app.extensions[EXT]


def enrol_photo(app: Flask, name: str, image: bytes, by: str, source: str, action: str,
                confirm_lookalike: str = "") -> Outcome:
    """Enrol `image` as `name` through the one Enroller (folder rules: one face, big enough); audited as `action`."""
    from recognizer.identity.enrol import FOLDER_RULES
    from recognizer.identity.gallery import Provenance

    try:
        enroller = _enroller(app)
    except EnrolUnavailable as exc:
        return Outcome(False, str(exc))
    enroller.store.action.value = action
    # an upload on the People page, or "this is <person>" from the review queue: the admin confirms the person was
    # shown the current notice, as a Capture does (both forms say so)
    from dashboard.services import services

    version = services(app).config.notice_version if action in NOTICE_ACTIONS else None
    enroller.store.notice.value = (version, by) if version else None
    enroller.store.confirmed.value = confirm_lookalike
    out = enroller.enrol(name, image, by=by, provenance=Provenance(by=by, source=source), rules=FOLDER_RULES,
                         confirm_lookalike=confirm_lookalike)
    return Outcome(out.ok, out.reason, out.code, out.lookalike.name if out.lookalike is not None else "")


def encode_probe(app: Flask, image: bytes) -> tuple[Optional[np.ndarray], str]:
    """The encoding of the one face in `image` (search by likeness), or (None, why not)."""
    from recognizer.identity.enrol import FOLDER_RULES, EnrolRefused, face_encoding_for_enrolment
    from recognizer.vision.imageio import BadImage, decode_image

    try:
        enroller = _enroller(app)
        encoding, _ = face_encoding_for_enrolment(enroller.engine, decode_image(image), FOLDER_RULES)
    except (EnrolUnavailable, BadImage, EnrolRefused) as exc:
        return None, str(exc)
    return np.asarray(encoding, np.float32), ""
