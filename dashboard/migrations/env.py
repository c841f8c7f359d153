"""Alembic environment: runs against the engine handed in by dashboard.db (no alembic.ini needed)."""
from __future__ import annotations

from alembic import context

from dashboard import audit_models, gallery_models, handover, library_models  # noqa: F401 - their tables belong to the schema too
from dashboard.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `python -m dashboard db upgrade --db URL`")
run_migrations_online()
