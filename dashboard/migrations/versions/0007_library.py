"""library: negatives in the gallery, the audit log of page changes, the review queue of faces from alerts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

from dashboard.models import Blob, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gallery_encodings") as batch:
        batch.add_column(sa.Column("negative", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("detail", sa.String(512), nullable=False),
    )
    for col in ("at", "actor", "action", "subject"):
        op.create_index(f"ix_audit_log_{col}", "audit_log", [col])
    op.create_table(
        "review_faces",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("station_id", sa.String(64), nullable=False),
        sa.Column("track", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("candidate", sa.String(64), nullable=True),
        sa.Column("distance", sa.Float(), nullable=True),
        sa.Column("vector", sa.LargeBinary(512), nullable=False),
        sa.Column("crop", Blob, nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("resolved_as", sa.String(64), nullable=True),
        sa.Column("resolved_by", sa.String(64), nullable=True),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("alert_id", "track", name="uq_review_alert_track"),
    )
    for col in ("alert_id", "station_id", "seen_at", "group_id"):
        op.create_index(f"ix_review_faces_{col}", "review_faces", [col])
    op.create_index("ix_review_state_group", "review_faces", ["state", "group_id"])


def downgrade() -> None:
    op.drop_table("review_faces")
    op.drop_table("audit_log")
    with op.batch_alter_table("gallery_encodings") as batch:
        batch.drop_column("negative")
