"""The dashboard's data key at start and in its commands: load the ring, check it against the database, rotate.

At start (`open_engine`): a database that holds sealed data refuses to start without the key or with another
one, naming what to set; a key file readable by others is refused. `rotate` seals everything with a new key:
the new key is put first in the file (old ones kept to open what is not yet re-sealed), every sealed column is
rewritten, then the old keys are dropped from the file.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dashboard import db as dbmod
from shared.crypto import DataKeyError, KeyRing, is_sealed, load_ring, new_key, write_ring

log = logging.getLogger(__name__)
# (table, primary key columns, sealed columns)
SEALED_COLUMNS = (("evidence", ("alert_id", "kind"), ("data",)),
                  ("gallery_encodings", ("id",), ("vector", "photo")),
                  ("review_faces", ("id",), ("vector",)),
                  ("review_crops", ("face_id",), ("data",)))


def ring_for(config) -> Optional[KeyRing]:  # noqa: ANN001 - DashboardConfig
    return load_ring(config.data_key_file)


def check(engine: Engine) -> None:
    """Raise DataKeyError when the engine's key ring does not fit the database; store the check value on first use."""
    from dashboard.models import Setting
    from dashboard.sealed import CHECK_KEY, CHECK_PLAIN, DIALECT_ATTR

    ring: Optional[KeyRing] = getattr(engine.dialect, DIALECT_ATTR, None)
    with dbmod.make_session_factory(engine, write=True)() as db:
        row = db.get(Setting, CHECK_KEY)
        if row is None:
            if ring is None:
                log.warning("no data key configured: encodings, photos and evidence are stored unencrypted "
                            "(facemon-dashboard data-key new --out FILE; FACEMON_DASHBOARD_DATA_KEY_FILE=FILE)")
                return
            db.add(Setting(key=CHECK_KEY, value=ring.seal(CHECK_PLAIN, CHECK_KEY).hex()))
            db.commit()
            log.info("data key %s: sealing encodings, photos and evidence at rest", ring.ids()[0])
            return
    sealed = bytes.fromhex(row.value)
    if ring is None:
        raise DataKeyError("this database holds encrypted data but no data key is configured: set "
                           "FACEMON_DASHBOARD_DATA_KEY_FILE (a 0600 key file) or FACEMON_DATA_KEY")
    try:
        ok = ring.open(sealed, CHECK_KEY) == CHECK_PLAIN
    except DataKeyError as exc:
        raise DataKeyError(f"the configured data key does not open this database's data: {exc}") from None
    if not ok:
        raise DataKeyError("the configured data key does not open this database's data")


def open_engine(config) -> Engine:  # noqa: ANN001 - DashboardConfig
    """The engine with the configured key ring (DataKeyError: missing, unreadable or world-readable key file)."""
    return dbmod.make_engine(config.database_url, ring_for(config))


def rotate(config, key_file: Path, recognizer_files=None) -> tuple[str, dict[str, int]]:  # noqa: ANN001
    """Seal everything with a fresh key; returns (new key id, values re-sealed per table). `recognizer_files`
    (a `recognizer.data_key.RecognizerFiles`): a recognizer sharing the key file, stopped; its files are sealed
    with the new key too before the old one is dropped."""
    old = load_ring(str(key_file)) if key_file.exists() else None
    ring = KeyRing((new_key(), *(old.keys if old else ())))
    write_ring(key_file, ring)  # first: a crash midway leaves a file that opens both old and new values
    engine = dbmod.make_engine(config.database_url, ring)
    counts: dict[str, int] = {}
    try:
        raw = dbmod.make_engine(config.database_url)  # sees the stored bytes as they are
        try:
            for table, pk, cols in SEALED_COLUMNS:
                counts[table] = _reseal(engine, raw, table, pk, cols, ring)
        finally:
            raw.dispose()
        from dashboard.models import Setting
        from dashboard.sealed import CHECK_KEY, CHECK_PLAIN

        with dbmod.make_session_factory(engine, write=True)() as db:
            row = db.get(Setting, CHECK_KEY) or Setting(key=CHECK_KEY, value="")
            row.value = ring.seal(CHECK_PLAIN, CHECK_KEY).hex()
            db.merge(row)
            db.commit()
    finally:
        engine.dispose()
    if recognizer_files is not None:
        from recognizer.data_key import reseal_all

        counts.update({f"recognizer {k}": v for k, v in reseal_all(ring, recognizer_files).items()})
    write_ring(key_file, KeyRing((ring.current,)))  # everything opens with the new key alone now
    return ring.ids()[0], counts


def _reseal(engine: Engine, raw: Engine, table: str, pk: tuple[str, ...], cols: tuple[str, ...], ring: KeyRing) -> int:
    t = sa.table(table, *(sa.column(c) for c in pk), *(sa.column(c, sa.LargeBinary) for c in cols))
    purposes = {("evidence", "data"): "evidence", ("gallery_encodings", "vector"): "gallery.vector",
                ("gallery_encodings", "photo"): "gallery.photo", ("review_faces", "vector"): "review.vector",
                ("review_crops", "data"): "review.crop"}
    n = 0
    with raw.connect() as conn:
        keys = [tuple(r) for r in conn.execute(sa.select(*(t.c[c] for c in pk)))]
    for key in keys:
        where = sa.and_(*(t.c[c] == v for c, v in zip(pk, key)))
        with raw.begin() as conn:
            row = conn.execute(sa.select(*(t.c[c] for c in cols)).where(where)).one_or_none()
            if row is None:
                continue
            values = {}
            for c, v in zip(cols, row):
                if v is None:
                    continue
                v = bytes(v)
                plain = ring.open(v, purposes[(table, c)]) if is_sealed(v) else v
                values[c] = ring.seal(plain, purposes[(table, c)])
            if values:
                conn.execute(sa.update(t).where(where).values(**values))
                n += 1
    return n
