"""A person's data as one thing: erase it everywhere (GDPR Art. 17), or export everything held about them (Art. 15).

Erasure deletes their encodings and enrolment photos and the review-queue faces named after them in one
transaction with the gallery's `remove` change and the audit entry; every recognizer following the gallery drops
them from memory and rewrites its local copy as it applies that change (long-poll: well under 2 s). Alerts and
their evidence are the exam office's record of a session and go by retention, not by erasure.
"""
from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from dashboard import audit, gallery
from dashboard.audit_models import AuditEntry
from dashboard.gallery_models import GalleryEncoding
from dashboard.library_models import ReviewCrop, ReviewFace  # a face's crop lives in review_crops (deleted with it)
from dashboard.models import Alert, EnrolGrant, Evidence, SignInFailure, User

log = logging.getLogger(__name__)


def erase_person(factory: sessionmaker[Session], name: str, actor: str, address: Optional[str] = None) -> tuple[int, int, int]:
    """Delete `name`'s encodings, photos and review faces, audited; (encodings, review faces, gallery seq).

    (0, 0, seq) when nobody of that name is enrolled (nothing is deleted or audited)."""
    faces = [0]

    def also(db: Session) -> None:
        faces[0] = db.execute(sa.delete(ReviewFace).where(
            sa.or_(ReviewFace.candidate == name, ReviewFace.resolved_as == name))).rowcount or 0
        audit.record(db, actor, "remove_person", name, f"erased: encodings and photos, {faces[0]} review faces",
                     address)

    removed, seq = gallery.remove_person(factory, name, also=also)
    if removed:
        log.info("erasure: %d encodings and %d review faces removed (gallery change %d) by %s",
                 removed, faces[0], seq, actor)
    return removed, faces[0] if removed else 0, seq


def _iso(value) -> Optional[str]:  # noqa: ANN001
    return value.isoformat() if value is not None else None


def export_person(db: Session, name: str, out: Path) -> dict:
    """Write everything held about `name` into `out` (person.json + images); returns the JSON written.

    Covers: encodings (values and provenance) and their photos, review-queue faces named after them (crops),
    the desk account linked to that face and its failed sign-ins, enrol grants for them, alerts raised while
    they were the desk's login (rows and evidence images), and audit entries about them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    files: list[str] = []

    def save(fname: str, data: Optional[bytes]) -> Optional[str]:
        if not data:
            return None
        (out / "images" / fname).write_bytes(data)
        files.append(f"images/{fname}")
        return f"images/{fname}"

    encodings = []
    for e in db.scalars(sa.select(GalleryEncoding).where(GalleryEncoding.person == name).order_by(GalleryEncoding.id)):
        encodings.append({
            "id": e.id, "negative": bool(getattr(e, "negative", False)), "model": e.model, "source": e.source,
            "station_id": e.station_id, "enrolled_by": e.enrolled_by, "grant_id": e.grant_id, "via": e.via,
            "created_at": _iso(e.created_at), "notice_version": e.notice_version,
            "notice_confirmed_by": e.notice_confirmed_by, "vector": list(struct.unpack("<128f", e.vector)),
            "photo": save(f"encoding-{e.id}.jpg", e.photo)})
    faces = [{"id": f.id, "alert_id": f.alert_id, "station_id": f.station_id, "verdict": f.verdict,
              "candidate": f.candidate, "state": f.state, "resolved_as": f.resolved_as, "seen_at": _iso(f.seen_at),
              "crop": save(f"review-{f.id}.jpg", crop)}
             for f, crop in db.execute(sa.select(ReviewFace, ReviewCrop.data).outerjoin(
                 ReviewCrop, ReviewCrop.face_id == ReviewFace.id).where(
                 sa.or_(ReviewFace.candidate == name, ReviewFace.resolved_as == name)).order_by(ReviewFace.id))]
    accounts = list(db.scalars(sa.select(User).where(User.identity == name)))
    logins = {name, *(u.username for u in accounts)}
    alerts = []
    for a in db.scalars(sa.select(Alert).where(Alert.login_name.in_(logins)).order_by(Alert.started_at)):
        images = {ev.kind: save(f"alert-{a.alert_id}-{ev.kind}.jpg", ev.data)
                  for ev in db.scalars(sa.select(Evidence).where(Evidence.alert_id == a.alert_id))}
        alerts.append({"alert_id": a.alert_id, "station_id": a.station_id, "login_name": a.login_name, "type": a.type,
                       "started_at": _iso(a.started_at), "ended_at": _iso(a.ended_at), "details": json.loads(a.details),
                       "acknowledged_by": a.acknowledged_by, "evidence": images})
    result = {
        "person": name,
        "encodings": encodings,
        "review_faces": faces,
        "accounts": [{"username": u.username, "role": u.role, "created_at": _iso(u.created_at)} for u in accounts],
        "sign_in_failures": [{"station_id": s.station_id, "username": s.username, "reason": s.reason, "at": _iso(s.at)}
                             for s in db.scalars(sa.select(SignInFailure).where(SignInFailure.username.in_(logins)))],
        "enrol_grants": [{"id": g.id, "admin": g.admin, "station_id": g.station_id, "issued_at": _iso(g.issued_at),
                          "used_at": _iso(g.used_at), "outcome": g.outcome}
                         for g in db.scalars(sa.select(EnrolGrant).where(EnrolGrant.identity == name))],
        "alerts": alerts,
        "audit": [{"id": e.id, "at": _iso(e.at), "actor": e.actor, "action": e.action, "detail": e.detail}
                  for e in db.scalars(sa.select(AuditEntry).where(AuditEntry.subject == name).order_by(AuditEntry.id))],
        "files": files,
    }
    (out / "person.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return result


__all__ = ["erase_person", "export_person"]
