"""Page times of the face library at size: 2,000 enrolled people (3 photos each) and 10,000 queued faces.

A real SQLite file seeded in bulk (random unit encodings, one real JPEG as every photo and crop), the app served
by Flask's test client (no socket: the figure is the server's own time per page). Each run is a fresh app on the
seeded file (a new process's worth of services: its review-queue index starts cold) fetching each page 5 times;
`--runs` runs (default 3); per page: min / median / max wall ms over all fetches, the median CPU ms of this process
(time.process_time, less sensitive to other load), the per-run medians, and the load average at each run. The same
pages on an empty library are measured first, in the same invocation.

Grouping a new face: the first POST of a run reads every queued vector into the index (cold); the next 20 are warm
(one aggregate query, a numpy pass); then one after another app resolved a group (its ids re-read). Beside them, the
grouping step alone: the in-memory index vs reading and unsealing every queued vector (the way before the index).

    python -m bench.library_pages [--people 2000] [--queued 10000] [--runs 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.library_pages")
REPO = Path(__file__).resolve().parents[1]


def _photo() -> bytes:
    from PIL import Image

    with Image.open(REPO / "known_faces" / "barack_obama" / "ageitgey_obama.jpg") as img:
        img = img.convert("RGB")
        img.thumbnail((112, 112))
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=80)
        return out.getvalue()


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def seed(app, people: int, queued: int, rng: np.random.Generator) -> None:  # noqa: ANN001
    import sqlalchemy as sa

    from dashboard.gallery_models import GalleryChange, GalleryEncoding, GalleryHead
    from dashboard.library_models import ReviewCrop, ReviewFace
    from dashboard.services import services

    photo, now = _photo(), dt.datetime.now(dt.timezone.utc)
    centres = _unit(rng, people)
    rows, changes = [], []
    for p in range(people):
        for k in range(3):
            v = centres[p] + rng.normal(0, 0.02, 128).astype(np.float32)
            rows.append(dict(person=f"person_{p:05d}", vector=v.astype("<f4").tobytes(), model="m", source=f"p{p}_{k}.jpg",
                             photo_sha256=f"{p * 3 + k:064x}", station_id=None, enrolled_by="bench", grant_id=None,
                             via="bench", photo=photo, created_at=now, negative=False))
    strangers = _unit(rng, max(1, queued // 3))  # ~3 faces per stranger
    faces = []
    for i in range(queued):
        s = i % len(strangers)
        v = strangers[s] + rng.normal(0, 0.02, 128).astype(np.float32)
        faces.append(dict(alert_id=f"{i:032x}", station_id=f"desk-{i % 40:02d}", track=1, verdict="unknown",
                          candidate=None, distance=0.7, vector=v.astype("<f4").tobytes(),
                          seen_at=now - dt.timedelta(seconds=queued - i), group_id=s + 1, state="queued"))
    with services(app).writer() as db:
        if not rows:
            return
        db.execute(sa.insert(GalleryEncoding), rows)
        ids = db.scalars(sa.select(GalleryEncoding.id).order_by(GalleryEncoding.id)).all()
        changes = [dict(seq=i + 1, op="add", person=r["person"], encoding_id=e, at=now) for i, (r, e) in enumerate(zip(rows, ids))]
        db.execute(sa.insert(GalleryChange), changes)
        db.execute(sa.update(GalleryHead).where(GalleryHead.id == 1).values(seq=len(changes)))
        if faces:
            db.execute(sa.insert(ReviewFace), faces)
            ids = db.scalars(sa.select(ReviewFace.id)).all()
            db.execute(sa.insert(ReviewCrop), [dict(face_id=i, data=photo) for i in ids])
        db.commit()


def timed(client, method: str, url: str, n: int = 5, **kw) -> list[tuple[float, float]]:  # noqa: ANN001
    """(wall ms, CPU ms) of `n` requests."""
    out = []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        r = getattr(client, method)(url, **kw)
        out.append(((time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3))
        assert r.status_code in (200, 201, 302), (url, r.status_code, r.get_data(as_text=True)[:300])
    return out


def pages(app, people: int, queued: int, token: str) -> list[tuple[str, list[float]]]:  # noqa: ANN001
    import base64

    from tests.dashboard.conftest import login

    client = app.test_client()
    login(client, "admin")
    last_people = max(1, -(-people // 50))
    name = f"person_{people // 2:05d}" if people else None
    photo = _photo()
    rng = np.random.default_rng(9)
    out = [("people, page 1", timed(client, "get", "/library/people")),
           (f"people, last page ({last_people})", timed(client, "get", f"/library/people?page={last_people}")),
           ("people, name search", timed(client, "get", "/library/people?q=person_0199")),
           ("review queue, page 1", timed(client, "get", "/library/review")),
           ("review queue, page 50", timed(client, "get", "/library/review?page=50")),
           ("search by person", timed(client, "get", "/library/search?person=person_00001"))]
    if name:
        out.append(("one person", timed(client, "get", f"/library/people/{name}")))
    h = {"Authorization": f"Bearer {token}"}
    bodies = [{"alert_id": f"b{i:031x}", "station_id": "desk-01", "track": i, "verdict": "unknown",
               "vector": base64.b64encode(_unit(rng, 1)[0].astype("<f4").tobytes()).decode(),
               "crop": base64.b64encode(photo).decode()} for i in range(22)]
    post = lambda b: timed(client, "post", "/api/review/faces", 1, json=b, headers=h)  # noqa: E731
    out.append(("a face queued, index cold", post(bodies[0])))
    out.append(("a face queued, index warm", [x for b in bodies[1:21] for x in post(b)]))
    if queued:  # another process resolves a group: this one re-reads the queued ids on its next face
        from tests.dashboard.conftest import build_app

        other = build_app(app.config["SQLALCHEMY_BENCH_URL"])
        admin = other.test_client()
        login(admin, "admin")
        from tests.dashboard.conftest import csrf_of

        admin.post("/library/review/1/stranger", data={"csrf_token": csrf_of(admin)})
        _dispose(other)
        out.append(("a face queued, after a change elsewhere", post(bodies[21])))
    return out


def grouping_alone(app, n: int = 20) -> list[tuple[str, list[tuple[float, float]]]]:  # noqa: ANN001
    """The grouping step of one new face: the warm in-memory index vs reading every queued vector (as before)."""
    import sqlalchemy as sa

    from dashboard import likeness
    from dashboard.library_models import ReviewFace
    from dashboard.services import services

    rng = np.random.default_rng(5)
    index = services(app).review_index

    def clock(fn) -> list[tuple[float, float]]:  # noqa: ANN001
        out = []
        for probe in _unit(rng, n):
            t0, c0 = time.perf_counter(), time.process_time()
            fn(probe)
            out.append(((time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3))
        return out

    def read_all(probe: np.ndarray) -> None:
        with services(app).sessions() as db:
            rows = db.connection().execute(sa.select(ReviewFace.vector, ReviewFace.group_id).where(ReviewFace.state == "queued")).all()
        likeness.group_of(probe, likeness.vectors([r[0] for r in rows]), [r[1] for r in rows])

    def in_memory(probe: np.ndarray) -> None:
        with index.lock, services(app).sessions() as db:
            index.sync(db)
            index.group_of(probe)

    return [("grouping alone: in-memory index", clock(in_memory)), ("grouping alone: read every vector", clock(read_all))]


def _dispose(app) -> None:  # noqa: ANN001
    from dashboard.services import services

    services(app).broker.close()
    services(app).engine.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.library_pages", description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=2000)
    ap.add_argument("--queued", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("dashboard.data_key").setLevel(logging.ERROR)  # the bench's database is a throwaway
    from dashboard import station_tokens
    from dashboard.services import services
    from tests.dashboard.conftest import build_app

    for label, people, queued in (("empty", 0, 0), (f"{args.people} people, {args.queued} queued", args.people, args.queued)):
        with tempfile.TemporaryDirectory(prefix="facemon-bench-library-") as tmp:
            url = f"sqlite:///{tmp}/dashboard.sqlite3"
            app = build_app(url)
            with services(app).sessions() as db:
                token = station_tokens.create_token(db, "bench", "service")
            t0 = time.perf_counter()
            seed(app, people, queued, np.random.default_rng(1))
            _dispose(app)
            print(f"\n[{label}] seeded in {time.perf_counter() - t0:.1f} s; {args.runs} runs of a fresh app")
            results: dict[str, list[list[tuple[float, float]]]] = {}
            loads = []
            for _ in range(args.runs):
                loads.append(os.getloadavg()[0])
                app = build_app(url)
                app.config["SQLALCHEMY_BENCH_URL"] = url
                for what, ms in pages(app, people, queued, token) + (grouping_alone(app) if queued else []):
                    results.setdefault(what, []).append(ms)
                _dispose(app)
            print(f"  load average (1 min) at each run: {', '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores")
            print(f"  {'ms':<40} {'min':>7} {'median':>7} {'max':>7} {'CPU med':>8}  per-run medians")
            for what, runs in results.items():
                wall = [w for run in runs for w, _ in run]
                cpu = [c for run in runs for _, c in run]
                per_run = " ".join(f"{statistics.median([w for w, _ in run]):.1f}" for run in runs)
                print(f"  {what:<40} {min(wall):7.1f} {statistics.median(wall):7.1f} {max(wall):7.1f} "
                      f"{statistics.median(cpu):8.1f}  {per_run}  (n={len(wall)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
