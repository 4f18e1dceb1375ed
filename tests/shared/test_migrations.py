from sqlalchemy import Engine, inspect

from shared.migrate import check
from shared.models import Base
from shared.settings import Settings


def test_upgrade_head_matches_models(engine: Engine, settings: Settings) -> None:
    check(settings)  # raises if autogenerate would find a difference
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_one_head_only() -> None:
    from alembic.script import ScriptDirectory

    from shared.migrate import alembic_config

    heads = ScriptDirectory.from_config(alembic_config(Settings())).get_heads()
    assert len(heads) == 1
