"""The one way tests make an app: through the operator's own code (`shared.tenancy.new_app`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from shared.tenancy import new_app


def make_app(bind: Connection | Engine, name: str = "acme", **columns: Any) -> int:
    """Create the app `name` on `bind` and return its id. On an Engine it is committed; on a
    Connection it joins the connection's transaction (rolled back with the test). `columns` set
    other columns of `apps` (a cap, say)."""
    with Session(bind=bind, join_transaction_mode="create_savepoint") as session:
        app = new_app(session, name)
        for column, value in columns.items():
            setattr(app, column, value)
        session.flush()
        app_id = int(app.id)
        session.commit()
    return app_id
