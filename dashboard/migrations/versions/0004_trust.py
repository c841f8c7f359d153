"""trust: desk_tickets (an admin's right to ask for enrol grants at a desk), enrol_grants (single-use, audited)

Revision ID: 0004
Revises: 0003
Create Date: 2025-06-15
"""
import sqlalchemy as sa
from alembic import op

from dashboard.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "desk_tickets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("station_id", sa.String(64), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_desk_tickets_username", "desk_tickets", ["username"])
    op.create_table(
        "enrol_grants",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("admin", sa.String(64), nullable=False),
        sa.Column("station_id", sa.String(64), nullable=False),
        sa.Column("identity", sa.String(64), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("used_by", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(256), nullable=True),
    )
    for col in ("admin", "station_id", "issued_at"):
        op.create_index(f"ix_enrol_grants_{col}", "enrol_grants", [col])


def downgrade() -> None:
    op.drop_table("enrol_grants")
    op.drop_table("desk_tickets")
