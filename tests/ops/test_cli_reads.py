"""`users find`, `users list --where`, `companies list` and `keys create --scope` over the read
model the read API serves."""

from __future__ import annotations

import orjson
from click.testing import CliRunner
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ops.cli import main
from shared.models import ApiKey, App, AttributeDefinition
from shared.settings import Settings
from tests.support.readmodel import seed


def _run(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner(env={"DATABASE_URL": settings.database_url}).invoke(main, list(args))
    return result.exit_code, result.output


def test_find_list_and_companies(clean_db: Engine, settings: Settings) -> None:
    with Session(clean_db) as session:
        seed(session)
        shop = session.scalars(select(App).where(App.name == "shop")).one()
        session.add(AttributeDefinition(app_id=shop.id, scope="user", name="seats",
                                        type="integer", origin="operator"))  # fmt: skip
        session.commit()
    code, out = _run(settings, "users", "find", "--app", "shop", "--email", "ADA@example.com", "--json")  # fmt: skip
    assert code == 0 and [u["user_id"] for u in orjson.loads(out)] == ["u1"]
    code, out = _run(settings, "users", "list", "--app", "shop", "--where", "attributes.seats>2", "--json")  # fmt: skip
    assert code == 0 and [u["user_id"] for u in orjson.loads(out)] == ["u1"]
    code, out = _run(settings, "users", "list", "--app", "shop", "--where", "email?", "--where",
                     "company=acme", "--any", "--json")  # fmt: skip
    assert code == 0 and len(orjson.loads(out)) == 2
    code, out = _run(settings, "users", "list", "--app", "shop", "--where", "attributes.nope?")
    assert code != 0 and "no user attribute 'nope'" in out
    code, out = _run(settings, "companies", "list", "--app", "shop", "--json")
    assert code == 0 and [c["group_id"] for c in orjson.loads(out)] == ["acme", "beta"]


def test_keys_have_a_scope(clean_db: Engine, settings: Settings) -> None:
    assert _run(settings, "apps", "create", "shop")[0] == 0
    code, out = _run(settings, "keys", "create", "--app", "shop", "--scope", "read", "--json")
    assert code == 0 and orjson.loads(out)["scope"] == "read"
    assert _run(settings, "keys", "create", "--app", "shop")[0] == 0
    assert _run(settings, "keys", "create", "--app", "shop", "--scope", "admin")[0] != 0
    with Session(clean_db) as session:
        assert sorted(session.scalars(select(ApiKey.scope))) == ["read", "write"]
