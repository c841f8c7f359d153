"""pool: the gallery (encodings with provenance, the numbered change log nodes follow, its head) and station_sessions

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

from dashboard.models import Blob, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gallery_encodings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("person", sa.String(64), nullable=False),
        sa.Column("vector", sa.LargeBinary(512), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("photo_sha256", sa.String(64), nullable=False),
        sa.Column("station_id", sa.String(64), nullable=True),
        sa.Column("enrolled_by", sa.String(64), nullable=False),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.Column("via", sa.String(64), nullable=False),
        sa.Column("photo", Blob, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("person", "photo_sha256", name="uq_gallery_person_photo"),
    )
    op.create_index("ix_gallery_encodings_person", "gallery_encodings", ["person"])
    op.create_table(
        "gallery_changes",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("person", sa.String(64), nullable=False),
        sa.Column("encoding_id", sa.Integer(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_gallery_changes_encoding_id", "gallery_changes", ["encoding_id"])
    op.create_table(
        "gallery_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer(), nullable=False),
    )
    op.create_table(
        "station_sessions",
        sa.Column("station_id", sa.String(64), primary_key=True),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("session", sa.String(160), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
    )
    op.bulk_insert(sa.table("gallery_head", sa.column("id", sa.Integer()), sa.column("seq", sa.Integer())),
                   [{"id": 1, "seq": 0}])


def downgrade() -> None:
    op.drop_table("station_sessions")
    op.drop_table("gallery_head")
    op.drop_index("ix_gallery_changes_encoding_id", "gallery_changes")
    op.drop_table("gallery_changes")
    op.drop_index("ix_gallery_encodings_person", "gallery_encodings")
    op.drop_table("gallery_encodings")
