"""review crops apart: the review queue's JPEG crops in their own table (the queue's rows stay small: grouping reads
every queued vector), an index for the queue page (state, group, time) and for search by person (resolved_as)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

from dashboard.models import Blob

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_crops",
        sa.Column("face_id", sa.Integer(), sa.ForeignKey("review_faces.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("data", Blob, nullable=False),
    )
    op.execute("INSERT INTO review_crops (face_id, data) SELECT id, crop FROM review_faces")
    op.drop_index("ix_review_state_group", "review_faces")
    with op.batch_alter_table("review_faces") as batch:
        batch.drop_column("crop")
    op.create_index("ix_review_state_group", "review_faces", ["state", "group_id", "seen_at"])
    op.create_index("ix_review_faces_resolved_as", "review_faces", ["resolved_as"])


def downgrade() -> None:
    op.drop_index("ix_review_faces_resolved_as", "review_faces")
    op.drop_index("ix_review_state_group", "review_faces")
    with op.batch_alter_table("review_faces") as batch:
        batch.add_column(sa.Column("crop", Blob, nullable=True))
    op.execute("UPDATE review_faces SET crop = (SELECT data FROM review_crops WHERE review_crops.face_id = review_faces.id)")
    op.create_index("ix_review_state_group", "review_faces", ["state", "group_id"])
    op.drop_table("review_crops")
