"""Columns sealed at rest: a SQLAlchemy type that encrypts on the way in and opens on the way out with the key ring
the engine was made with (`dashboard.db.make_engine(url, keys)`), so every query path is covered.

Without a key ring values are stored as they come (and a sealed value read back is a clear error, not garbage);
plain values written before a key was configured are still read, and `facemon-dashboard data-key rotate` seals them.
"""
from __future__ import annotations

from typing import Optional

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from shared.crypto import DataKeyError, KeyRing, is_sealed

DIALECT_ATTR = "facemon_keys"
CHECK_KEY = "data_key_check"  # settings row: a sealed known value, so a wrong key is found at start
CHECK_PLAIN = b"facemon data key check"


def ring_of(dialect) -> Optional[KeyRing]:  # noqa: ANN001
    return getattr(dialect, DIALECT_ATTR, None)


class Sealed(sa.types.TypeDecorator):
    """LargeBinary sealed with AES-GCM for `purpose` (also the associated data: values do not move between columns)."""

    impl = sa.LargeBinary
    cache_ok = True

    def __init__(self, purpose: str, long: bool = True) -> None:
        super().__init__()
        self.purpose, self.long = purpose, long

    def load_dialect_impl(self, dialect):  # noqa: ANN001, ANN201
        if self.long and dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.LONGBLOB())
        return dialect.type_descriptor(sa.LargeBinary())

    def process_bind_param(self, value, dialect):  # noqa: ANN001, ANN201
        ring = ring_of(dialect)
        if value is None or ring is None:
            return value
        return ring.seal(bytes(value), self.purpose)

    def process_result_value(self, value, dialect):  # noqa: ANN001, ANN201
        if value is None:
            return None
        value = bytes(value)
        if not is_sealed(value):
            return value
        ring = ring_of(dialect)
        if ring is None:
            raise DataKeyError(f"the database holds encrypted {self.purpose} data but no data key is configured "
                               "(FACEMON_DASHBOARD_DATA_KEY_FILE or FACEMON_DATA_KEY)")
        return ring.open(value, self.purpose)
