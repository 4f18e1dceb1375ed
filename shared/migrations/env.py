"""Alembic environment: the URL comes from Settings, and every migration runs with a lock_timeout."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from shared.db import make_engine
from shared.models import Base
from shared.partitions import is_partition
from shared.settings import Settings

config = context.config
target_metadata = Base.metadata
MIGRATION_LOCK = 0x75736572_6D696772  # "usermigr": one migration at a time


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave the history tables' monthly partitions out of comparisons: the maintenance job makes
    them, not the models."""
    return not (type_ == "table" and name is not None and is_partition(name))


def run_migrations_online() -> None:
    url = config.attributes.get("database_url") or Settings.from_env().database_url
    engine = make_engine(Settings(database_url=url))
    with engine.connect() as connection:
        # Every new pod of a release migrates before it starts: one at a time, the others wait
        # here and then find the schema current. A session lock, held until this connection closes.
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
        # A migration waiting behind live traffic should fail fast, not queue every writer behind it.
        connection.execute(text("SET lock_timeout = '10s'"))
        connection.commit()  # SET is per session; end its implicit transaction before Alembic's
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            include_name=include_name,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit(
        "userdest migrations run online only: set DATABASE_URL and run `userdest db upgrade`"
    )
run_migrations_online()
