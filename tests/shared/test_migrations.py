import os
import subprocess

from sqlalchemy import Engine, inspect, text

from shared.db import make_engine
from shared.migrate import check, head
from shared.models import Base
from shared.settings import Settings
from tests.support.scratchdb import scratch_database
from tests.support.stack import BIN


def test_upgrade_head_matches_models(engine: Engine, settings: Settings) -> None:
    check(settings)  # raises if autogenerate would find a difference
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_one_head_only() -> None:
    from alembic.script import ScriptDirectory

    from shared.migrate import alembic_config

    heads = ScriptDirectory.from_config(alembic_config(Settings())).get_heads()
    assert len(heads) == 1


def test_upgrades_started_together_take_turns(settings: Settings) -> None:
    """Every new pod of a release runs `userdest db upgrade` before it starts (an init container):
    upgrades that start at once must take turns, the later ones finding nothing left to do."""
    with scratch_database("together", revision="base") as (scratch, _engine):
        env = {**os.environ, "DATABASE_URL": scratch.database_url}
        runs = [
            subprocess.Popen(
                [str(BIN / "userdest"), "db", "upgrade"], env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(3)
        ]  # fmt: skip
        outputs = [run.communicate(timeout=120)[0].decode() for run in runs]
        assert [run.returncode for run in runs] == [0, 0, 0], outputs
        engine = make_engine(scratch)
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head(scratch)
        engine.dispose()
