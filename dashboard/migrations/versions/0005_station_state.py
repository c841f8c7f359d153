"""station state: camera, degraded reasons, last time the desk had a session, its open station_offline alert

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

from dashboard.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (
    ("camera", lambda: sa.String(16)),
    ("camera_error", lambda: sa.String(200)),
    ("degraded", lambda: sa.String(200)),
    ("last_connected", UTCDateTime),
    ("offline_alert_id", lambda: sa.String(32)),
)


def upgrade() -> None:
    with op.batch_alter_table("station_status") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("station_status") as batch:
        for name, _kind in reversed(COLUMNS):
            batch.drop_column(name)
