"""desk sign-in: users.identity (evaluator's enrolled face), sign_in_failures (rate limits, alerts)

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01
"""
import sqlalchemy as sa
from alembic import op

from dashboard.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:  # batch: SQLite cannot ALTER most things in place
        batch.add_column(sa.Column("identity", sa.String(64), nullable=True))
    op.create_table(
        "sign_in_failures",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("station_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    for col in ("station_id", "username", "at"):
        op.create_index(f"ix_sign_in_failures_{col}", "sign_in_failures", [col])


def downgrade() -> None:
    op.drop_table("sign_in_failures")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("identity")
