"""The HTTP receiver: `gunicorn "api:create_app()"`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from shared.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """The receiver app. Without `settings`, they come from the environment, verified, and logging
    is set up as JSON lines; with them (tests, embedding), logging is left to the caller.

    Nothing connects here: Redis and Postgres are reached on the first request that needs them.
    """
    # Imported here rather than at the top: gunicorn's master imports this package to read
    # api.gunicorn_conf, and every module loaded there is inherited by the gevent workers it forks.
    # A worker monkey-patches ssl before it loads the app; redis-py, loaded earlier, would keep the
    # unpatched SSLContext (and gevent would print a MonkeyPatchWarning outside the JSON log).
    from flask import Flask

    from api.body import closing
    from api.errors import register_error_handlers
    from api.views import Receiver, register_routes
    from shared.logs import configure_logging
    from shared.settings import Settings

    if settings is None:
        settings = Settings.from_env().verify()
        configure_logging(settings.log_level)
    app = Flask(__name__, static_folder=None)
    receiver = Receiver.from_settings(settings)
    app.extensions["userdest"] = receiver
    register_error_handlers(app)
    register_routes(app, receiver)
    app.wsgi_app = closing(app.wsgi_app)  # type: ignore[method-assign,assignment]
    return app


__all__ = ["create_app"]
