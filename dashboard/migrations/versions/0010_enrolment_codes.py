"""enrolment codes: single-use, expiring codes a desk redeems for its edge env file (add-stations --codes)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

from dashboard.models import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrolment_codes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("station_id", sa.String(64), nullable=False),
        sa.Column("site", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("used_from", sa.String(64), nullable=True),
        sa.Column("voided_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_enrolment_codes_station_id", "enrolment_codes", ["station_id"])


def downgrade() -> None:
    op.drop_index("ix_enrolment_codes_station_id", "enrolment_codes")
    op.drop_table("enrolment_codes")
