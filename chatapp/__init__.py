"""chatapp: a self-hostable AI chat web app (Quart + HTMX + SSE, PostgreSQL, Redis, S3)."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from quart import Quart

from . import cache, cli, compress, config, csrf, db, draining, errors, logs, metrics, security, sessions, templating
from .config import ROOT


def create_app(overrides: dict[str, Any] | None = None) -> Quart:
    """Build the app: settings from the environment, then overrides, then each part's init_app."""
    app = Quart(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
        instance_path=None,
    )
    settings = config.load()
    settings.update(overrides or {})
    app.config.update(settings)
    instance_dir = Path(app.config["CHATAPP_INSTANCE_DIR"])
    app.config["SECRET_KEY"] = app.config["SECRET_KEY"] or config.ensure_secret_key(instance_dir)
    app.config["MAX_CONTENT_LENGTH"] = app.config["CHATAPP_MAX_BODY_BYTES"]
    # Browsers cache versioned assets for a year; templates add ?v= content hashes.
    app.config.setdefault("SEND_FILE_MAX_AGE_DEFAULT", 3600)
    # First: every later hook (and error) runs with a request id and is counted.
    logs.init_app(app)
    metrics.init_app(app)
    compress.init_app(app)
    db.init_app(app)
    cache.init_app(app)
    sessions.init_app(app)
    csrf.init_app(app)
    security.init_app(app)
    templating.init_app(app)
    errors.init_app(app)
    cli.init_app(app)
    draining.init_app(app)
    _register_parts(app)
    return app


def _register_parts(app: Quart) -> None:
    """The streaming machinery, then every blueprint in chatapp/views (each module's `bp`).

    A views module may also define `init_app(app)` for what its feature needs at start-up.
    """
    from . import generation, local_model, views

    # The bundled offline model (#10) first: its before_serving sets OPENAI_BASE_URL, which
    # generation's before_serving (registered after it, so run after it) builds the client from.
    local_model.init_app(app)
    generation.init_app(app)
    for info in sorted(pkgutil.iter_modules(views.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{views.__name__}.{info.name}")
        if hasattr(module, "init_app"):
            module.init_app(app)
        if hasattr(module, "bp"):
            app.register_blueprint(module.bp)
