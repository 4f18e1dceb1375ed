"""The read API, a process of its own beside the receiver:
`gunicorn -c python:api.gunicorn_conf --bind 127.0.0.1:8001 "readapi:create_app()"`.

It takes read keys only (a receiver's write keys are public in browsers), answers JSON with no
CORS headers (it is for servers), and reads Postgres through the read model the CLI uses
(shared/readmodel.py). docs/readapi.md describes every endpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from shared.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """The read API app. Without `settings`, they come from the environment, verified, and logging
    is set up as JSON lines. Nothing connects here."""
    # Imported here for the reason api.create_app gives: gunicorn's gevent workers patch first.
    from flask import Flask

    from readapi.views import ReadApi, register_routes
    from shared.logs import configure_logging
    from shared.settings import Settings

    if settings is None:
        settings = Settings.from_env().verify()
        configure_logging(settings.log_level)
    app = Flask(__name__, static_folder=None)
    reader = ReadApi(settings)
    app.extensions["userdest-read"] = reader
    register_routes(app, reader)
    return app


__all__ = ["create_app"]
