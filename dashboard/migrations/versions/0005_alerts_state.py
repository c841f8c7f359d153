"""station_status.alerts_state: what the recognizer's alert outbox can do (ok, disk_full, degraded)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("station_status") as batch:
        batch.add_column(sa.Column("alerts_state", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("station_status") as batch:
        batch.drop_column("alerts_state")
