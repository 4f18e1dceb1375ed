"""The HTTP receiver: `gunicorn "api:create_app()"`."""

from __future__ import annotations

from flask import Flask

from api.errors import register_error_handlers
from api.views import Receiver, register_routes
from shared.logs import configure_logging
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """The receiver app. Without `settings`, they come from the environment, verified, and logging
    is set up as JSON lines; with them (tests, embedding), logging is left to the caller.

    Nothing connects here: Redis and Postgres are reached on the first request that needs them.
    """
    if settings is None:
        settings = Settings.from_env().verify()
        configure_logging(settings.log_level)
    app = Flask(__name__, static_folder=None)
    receiver = Receiver.from_settings(settings)
    app.extensions["userdest"] = receiver
    register_error_handlers(app)
    register_routes(app, receiver)
    return app


__all__ = ["create_app"]
