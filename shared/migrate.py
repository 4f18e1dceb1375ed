"""Run Alembic from code, so `userdest db upgrade` needs no alembic.ini in the working directory."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from shared.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.attributes["database_url"] = settings.database_url
    # Migration 0009 keys the suppressed ids' hashes with it.
    cfg.attributes["suppression_secret"] = settings.suppression_secret
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)


def head(settings: Settings) -> str | None:
    """The newest revision this release knows."""
    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()


def known(settings: Settings, revision: str) -> bool:
    """Whether `revision` names a revision of this release (or `base`, before the first)."""
    if revision == "base":
        return True
    try:
        found = ScriptDirectory.from_config(alembic_config(settings)).get_revision(revision)
    except CommandError:  # unknown, ambiguous or malformed
        return False
    return found is not None


def check(settings: Settings) -> None:
    """Raise if the models and the migrated database disagree (alembic check)."""
    command.check(alembic_config(settings))
