"""privacy: the audit log chained by hashes (address, prev_hash, hash; audit_head), the notice an enrolled person
was shown and who confirmed it

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from dashboard.audit import GENESIS, entry_hash
    from dashboard.models import UTCDateTime

    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("address", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=False, server_default=""))
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("anchor_id", sa.Integer(), nullable=False),
        sa.Column("anchor_hash", sa.String(64), nullable=False),
    )
    # chain what the library recorded before this revision, in id order
    log = sa.table("audit_log", sa.column("id", sa.Integer), sa.column("at", UTCDateTime()), sa.column("actor"),
                   sa.column("action"), sa.column("subject"), sa.column("detail"), sa.column("address"),
                   sa.column("prev_hash"), sa.column("hash"))
    conn = op.get_bind()
    prev, first, last = GENESIS, None, 0
    for row in conn.execute(sa.select(log).order_by(log.c.id)).mappings().all():
        digest = entry_hash(prev, row["id"], row["at"], row["actor"], row["action"], row["subject"], row["detail"], "")
        conn.execute(sa.update(log).where(log.c.id == row["id"]).values(prev_hash=prev, hash=digest))
        first = row["id"] if first is None else first
        prev, last = digest, row["id"]
    op.bulk_insert(head, [{"id": 1, "seq": last, "last_hash": prev, "anchor_id": first or 1, "anchor_hash": GENESIS}])
    with op.batch_alter_table("gallery_encodings") as batch:
        batch.add_column(sa.Column("notice_version", sa.String(32), nullable=True))
        batch.add_column(sa.Column("notice_confirmed_by", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gallery_encodings") as batch:
        batch.drop_column("notice_confirmed_by")
        batch.drop_column("notice_version")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("address")
