"""The face library pages (admin): people with the photos their encodings came from, the review queue, search.

Every change goes through the gallery (dashboard/gallery.py): it is numbered in the change log that recognizer
nodes long-poll, so it reaches them within one round trip, and it is audited (dashboard/audit.py) in the same
transaction. Photos are enrolled through the one Enroller (dashboard/library_enrol.py).
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Optional

import numpy as np
import sqlalchemy as sa
from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for

from dashboard import audit, gallery, likeness, person_data, review_queue
from dashboard.api_requests import bearer_caller, json_object
from dashboard.audit_pages import look
from dashboard.db import get_db
from dashboard.gallery_api import notifier
from dashboard.gallery_models import GalleryEncoding
from dashboard.library_enrol import encode_probe, enrol_photo
from dashboard.library_models import ReviewFace
from dashboard.services import services
from dashboard.web_security import check_csrf, current_user, login_required
from shared.alert_wire import BadAlert, parse_station
from shared.names import InvalidName, validate_name

log = logging.getLogger(__name__)
bp = Blueprint("library", __name__)
PEOPLE_PER_PAGE = 50
GROUPS_PER_PAGE = 20


def _page() -> int:
    try:
        return max(1, min(int(request.args.get("page", 1)), 10**6))
    except ValueError:
        return 1


def _name(raw: object, what: str = "name") -> str:
    try:
        return validate_name(raw, what)
    except InvalidName as exc:
        abort(400, str(exc))


def _admin() -> str:
    return current_user().username


def _jpeg(data: Optional[bytes]) -> Response:
    if not data:
        abort(404, "no photo")
    resp = Response(data, mimetype="image/jpeg")
    resp.headers["Cache-Control"] = "private, max-age=3600"
    return resp


# ---- people ----
@bp.get("/library/people")
@login_required(admin=True)
def people():  # noqa: ANN201
    db, page, q = get_db(), _page(), request.args.get("q", "").strip()[:64]
    e = GalleryEncoding
    base = sa.select(e.person).group_by(e.person)
    if q:
        base = base.where(e.person.contains(q, autoescape=True))
    total = db.scalar(sa.select(sa.func.count()).select_from(base.subquery())) or 0
    names = [p for (p,) in db.execute(base.order_by(e.person).limit(PEOPLE_PER_PAGE).offset((page - 1) * PEOPLE_PER_PAGE))]
    rows = db.execute(
        sa.select(e.person, sa.func.sum(sa.case((e.negative.is_(False), 1), else_=0)).label("photos"),
                  sa.func.sum(sa.case((e.negative.is_(True), 1), else_=0)).label("negatives"),
                  sa.func.min(sa.case((e.negative.is_(False), e.id))).label("thumb"),
                  sa.func.max(e.created_at).label("last"))
        .where(e.person.in_(names)).group_by(e.person).order_by(e.person)).all()
    return render_template("library_people.html", rows=rows, total=total, page=page, q=q,
                           pages=max(1, -(-total // PEOPLE_PER_PAGE)), notice_version=services().config.notice_version,
                           like=_like(), new_name=request.args.get("name", "")[:64])


@bp.get("/library/people/<name>")
@login_required(admin=True)
def person(name: str):  # noqa: ANN201
    name = _name(name)
    db = get_db()
    e = GalleryEncoding
    rows = db.execute(sa.select(e.id, e.vector, e.source, e.station_id, e.enrolled_by, e.via, e.grant_id, e.created_at,
                                e.negative, e.photo.is_not(None).label("has_photo"))
                      .where(e.person == name).order_by(e.id)).all()
    if not rows:
        abort(404, f"nobody named {name!r} is enrolled")
    look("person.view", name, f"{len(rows)} encodings")
    photos = [r for r in rows if not r.negative]
    far = likeness.far_photos(likeness.vectors([r.vector for r in photos]))
    return render_template("library_person.html", name=name, photos=list(zip(photos, far)),
                           negatives=[r for r in rows if r.negative], history=audit.entries(db, name, 30),
                           notice_version=services().config.notice_version, like=_like())


@bp.get("/library/photos/<int:encoding_id>.jpg")
@login_required(admin=True)
def photo(encoding_id: int):  # noqa: ANN201
    return _jpeg(get_db().scalar(sa.select(GalleryEncoding.photo).where(GalleryEncoding.id == encoding_id)))


@bp.post("/library/people/<name>/photos")
@login_required(admin=True)
def add_photo(name: str):  # noqa: ANN201
    check_csrf()
    name = _name(name)
    return _upload(name, url_for("library.person", name=name))


@bp.post("/library/people")
@login_required(admin=True)
def add_person():  # noqa: ANN201
    check_csrf()
    name = _name(request.form.get("name", "").strip(), "name")
    return _upload(name, url_for("library.person", name=name), url_for("library.people"))


def _upload(name: str, done: str, failed: Optional[str] = None) -> Response:
    upload = request.files.get("photo")
    if upload is None or not upload.filename:
        flash("Choose a photo to upload.")
        return redirect(failed or done)
    filename = upload.filename.replace("\\", "/").rsplit("/", 1)[-1][:200] or "upload"
    out = enrol_photo(current_app._get_current_object(), name, upload.read(), _admin(), f"upload:{filename}",
                      "add_photo", request.form.get("confirm_lookalike", ""))
    flash(("Added: " if out.ok else "Refused: ") + out.reason)
    if out.code == "looks_like" and out.like:  # the form comes back with the deliberate confirmation to tick
        return redirect(url_for("library.people", name=name, like=out.like) if failed else
                        url_for("library.person", name=name, like=out.like))
    return redirect(done if out.ok else (failed or done))


def _like() -> str:
    """The lookalike an upload was refused for (?like=), offered to confirm on the form; "" when none or invalid."""
    try:
        return validate_name(request.args.get("like"), "like") if request.args.get("like") else ""
    except InvalidName:
        return ""


@bp.post("/library/photos/<int:encoding_id>/remove")
@login_required(admin=True)
def remove_photo(encoding_id: int):  # noqa: ANN201
    check_csrf()
    who = _admin()
    owner = get_db().scalar(sa.select(GalleryEncoding.person).where(GalleryEncoding.id == encoding_id)) or "?"
    found = gallery.drop_encoding(services().writer, encoding_id,
                                  also=lambda db: audit.record(db, who, "remove_photo", owner, f"encoding {encoding_id}"))
    if found is None:
        abort(404, "no such photo")
    person_name, seq = found
    notifier().committed(seq)
    flash(f"Removed one photo of {person_name}.")
    left = get_db().scalar(sa.select(sa.func.count()).select_from(GalleryEncoding).where(GalleryEncoding.person == person_name))
    return redirect(url_for("library.person", name=person_name) if left else url_for("library.people"))


@bp.post("/library/people/<name>/rename")
@login_required(admin=True)
def rename(name: str):  # noqa: ANN201
    check_csrf()
    old, new, who = _name(name), _name(request.form.get("new_name", "").strip(), "new name"), _admin()
    if new == old:
        return redirect(url_for("library.person", name=old))
    try:
        seq = gallery.rename_person(services().writer, old, new,
                                    also=lambda db: audit.record(db, who, "rename", new, f"was {old}"))
    except gallery.NameTaken as exc:
        flash(f"Refused: {exc}")
        return redirect(url_for("library.person", name=old))
    if seq is None:
        abort(404, f"nobody named {old!r} is enrolled")
    notifier().committed(seq)
    flash(f"Renamed {old} to {new}.")
    return redirect(url_for("library.person", name=new))


@bp.post("/library/people/<name>/remove")
@login_required(admin=True)
def remove_person(name: str):  # noqa: ANN201
    check_csrf()
    name, who = _name(name), _admin()
    removed, _faces, seq = person_data.erase_person(services().writer, name, who)
    if not removed:
        abort(404, f"nobody named {name!r} is enrolled")
    notifier().committed(seq)
    flash(f"Removed {name} ({removed} encodings).")
    return redirect(url_for("library.people"))


# ---- review queue ----
@bp.get("/library/review")
@login_required(admin=True)
def review():  # noqa: ANN201
    page = _page()
    groups, total = review_queue.groups_page(get_db(), page, GROUPS_PER_PAGE)
    return render_template("library_review.html", groups=groups, total=total, page=page,
                           pages=max(1, -(-total // GROUPS_PER_PAGE)), confirm=_lookalike_to_confirm(),
                           notice_version=services().config.notice_version)


def _lookalike_to_confirm() -> Optional[dict]:
    """After "this is <person>" was refused as a lookalike: {group, person, like} for that group's confirm control."""
    try:
        group = int(request.args.get("confirm", ""))
        return {"group": group, "person": validate_name(request.args.get("person"), "person"),
                "like": validate_name(request.args.get("like"), "like")}
    except (ValueError, InvalidName):
        return None


@bp.get("/library/review/faces/<int:face_id>.jpg")
@login_required(admin=True)
def review_crop(face_id: int):  # noqa: ANN201
    return _jpeg(review_queue.crop_of(get_db(), face_id))


@bp.post("/library/review/<int:group_id>/assign")
@login_required(admin=True)
def assign(group_id: int):  # noqa: ANN201
    """"This is <person>": each face of the group through the Enroller (quality gate, lookalike check)."""
    check_csrf()
    name, who = _name(request.form.get("person", "").strip(), "person"), _admin()
    faces = review_queue.group_faces(get_db(), group_id)
    if not faces:
        abort(404, "that group is no longer in the queue")
    added, refused = [], []
    for f, crop in faces:
        out = enrol_photo(current_app._get_current_object(), name, crop, who, f"review:{f.alert_id}:{f.track}",
                          "assign", request.form.get("confirm_lookalike", ""))
        (added if out.ok else refused).append((f, out))
    with services().writer() as db:
        review_queue.resolve(db, [f.id for f, _ in added], review_queue.ASSIGNED, name, who)
        db.commit()
    if added:
        flash(f"Added {len(added)} face(s) to {name}.")
    for f, out in refused:
        flash(f"Refused face from {f.station_id}: {out.reason}")
    like = next((out.like for _, out in refused if out.code == "looks_like" and out.like), "")
    if like:  # the group's card offers the deliberate confirmation of exactly that lookalike
        return redirect(url_for("library.review", confirm=group_id, person=name, like=like))  # no #anchor: Chrome then ignores autofocus
    return redirect(url_for("library.review"))


@bp.post("/library/review/<int:group_id>/stranger")
@login_required(admin=True)
def stranger(group_id: int):  # noqa: ANN201
    check_csrf()
    who = _admin()
    with services().writer() as db:
        ids = [f.id for f, _ in review_queue.group_faces(db, group_id)]
        n = review_queue.resolve(db, ids, review_queue.STRANGER, None, who)
        if n:
            audit.record(db, who, "dismiss", f"review group {group_id}", f"{n} face(s): a stranger")
        db.commit()
    if not n:
        abort(404, "that group is no longer in the queue")
    flash(f"Dismissed {n} face(s) as a stranger.")
    return redirect(url_for("library.review"))


@bp.post("/library/review/<int:group_id>/not")
@login_required(admin=True)
def not_person(group_id: int):  # noqa: ANN201
    """"Not <person>": the group's faces kept by the gallery as negatives of that person (followed by every node)."""
    check_csrf()
    name, who = _name(request.form.get("person", "").strip(), "person"), _admin()
    db = get_db()
    if not db.scalar(sa.select(sa.func.count()).select_from(GalleryEncoding)
                     .where(GalleryEncoding.person == name, GalleryEncoding.negative.is_(False))):
        abort(404, f"nobody named {name!r} is enrolled")
    faces = review_queue.group_faces(db, group_id)
    if not faces:
        abort(404, "that group is no longer in the queue")
    for f, crop in faces:
        new = gallery.NewEncoding(person=name, vector=f.vector, model="dlib_face_recognition_resnet_model_v1",
                                  source=f"review:{f.alert_id}:{f.track}", photo_sha256=review_queue.crop_digest(crop),
                                  enrolled_by=who, via="dashboard", station_id=f.station_id, photo=crop, negative=True)

        def also(wdb, f=f) -> None:  # noqa: ANN001
            review_queue.resolve(wdb, [f.id], review_queue.NOT, name, who)
            audit.record(wdb, who, "not_person", name, f"face {f.id} from {f.station_id}")

        change, created = gallery.add_encoding(services().writer, new, also=also)
        if created:
            notifier().committed(change["seq"])
        else:  # the very same crop is already a negative of them: the face is resolved all the same
            with services().writer() as wdb:
                also(wdb)
                wdb.commit()
    flash(f"Kept {len(faces)} face(s) as NOT {name}: they will not be accepted as {name}.")
    return redirect(url_for("library.review"))


# ---- search ----
@bp.route("/library/search", methods=["GET", "POST"])
@login_required(admin=True)
def search():  # noqa: ANN201
    db = get_db()
    person_name = request.args.get("person", "").strip()[:64]
    hits: list = []
    enrolled: list = []
    error = ""
    probe = None
    like_face = request.args.get("face", "")
    if request.method == "POST":
        check_csrf()
        upload = request.files.get("photo")
        probe, error = (encode_probe(current_app._get_current_object(), upload.read()) if upload and upload.filename
                        else (None, "choose a photo of a face"))
    elif like_face:  # a face already seen at a desk (its crop's encoding): no face engine needed
        vector = db.scalar(sa.select(ReviewFace.vector).where(ReviewFace.id == int(like_face))) if like_face.isdigit() and len(like_face) < 10 else None
        if vector is None:
            abort(404, "no such face")
        probe = np.frombuffer(vector, "<f4")
    if probe is not None:
        hits = review_queue.search_by_likeness(db, probe)
        rows = db.execute(sa.select(GalleryEncoding.id, GalleryEncoding.vector).where(GalleryEncoding.negative.is_(False))).all()
        near = likeness.nearest(probe, likeness.vectors([r.vector for r in rows]), 20, 0.6)
        by_id = {r.id: r for r in db.scalars(sa.select(GalleryEncoding).where(GalleryEncoding.id.in_([rows[i].id for i, _ in near])))}
        enrolled = [(by_id[rows[i].id], d) for i, d in near]
    elif person_name:
        hits = [(f, None) for f in review_queue.search_by_person(db, person_name)]
    return render_template("library_search.html", hits=hits, enrolled=enrolled, person=person_name, error=error,
                           searched=request.method == "POST" or bool(person_name) or bool(like_face))


# ---- faces from recognizers ----
@bp.post("/api/review/faces")
def post_face():  # noqa: ANN201
    """A recognizer's face for the review queue: `{alert_id, station_id, track, verdict: unknown|unsure, vector
    (base64 of 128 float32), crop (base64 JPEG), candidate?, distance?, seen_at? (ISO)}` → 201 `{id, group}`."""
    caller = bearer_caller()
    body = json_object()
    try:
        station = parse_station(body.get("station_id", ""))
        if caller.kind != "service" and caller.name != station:
            abort(403, "a station token may post faces only for its own station")
        alert_id = body.get("alert_id")
        if not isinstance(alert_id, str) or not 1 <= len(alert_id) <= 32 or not alert_id.isalnum():
            raise review_queue.BadFace("alert_id must be 1..32 letters or digits")
        seen_at = dt.datetime.fromisoformat(body["seen_at"]) if body.get("seen_at") else dt.datetime.now(dt.timezone.utc)
        if seen_at.tzinfo is None:
            raise review_queue.BadFace("seen_at must carry its UTC offset")
        face = review_queue.parse_face(body, alert_id.lower(), station, seen_at)
    except (BadAlert, review_queue.BadFace, ValueError, TypeError) as exc:
        abort(400, str(exc))
    try:
        face_id, group = review_queue.add_face(services().writer, face, services().review_index,
                                               services().config.review_max_queued_per_station)
    except review_queue.QueueFull as exc:
        abort(429, str(exc))
    return {"id": face_id, "group": group}, 201
