"""Template helpers: static_url() with content hashes, the CSRF token, fragment rendering."""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2_fragments.quart import render_block
from quart import Quart, current_app, g, render_template, request

from . import csrf
from .config import ROOT


@lru_cache(maxsize=256)
def _file_hash(path: str, mtime: float) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def static_url(filename: str) -> str:
    """URL of a static asset: the published copy under STATIC_URL, else /static with ?v=hash."""
    manifest = current_app.extensions.get("static_manifest")
    base = current_app.config.get("STATIC_URL")
    if base and manifest and filename in manifest:
        return f"{base.rstrip('/')}/{manifest[filename]}"
    path = ROOT / "static" / filename
    try:
        version = _file_hash(str(path), path.stat().st_mtime)
    except OSError:
        version = "0"
    return f"/static/{filename}?v={version}"


def is_htmx() -> bool:
    """True for requests made by htmx (but not history restores, which want the full page)."""
    return bool(request.headers.get("HX-Request")) and not request.headers.get("HX-History-Restore-Request")


async def page(template: str, block: str | None = None, status: int = 200, **context: Any) -> Any:
    """Render a whole page, or one block when htmx targets the element of that name.

    The block's container carries id="<block>", so a request aimed at it (HX-Target) gets
    only the fragment, while htmx navigations that target <body> get the full page.
    """
    if block and is_htmx() and request.headers.get("HX-Target") == block:
        body = await render_block(template, block, **context)
    else:
        body = await render_template(template, **context)
    response = current_app.response_class(body, status=status, content_type="text/html; charset=utf-8")
    response.vary.add("HX-Request")
    response.vary.add("HX-Target")
    return response


def init_app(app: Quart) -> None:
    """Expose helpers to every template."""
    app.jinja_env.globals.update(static_url=static_url, csrf_token=csrf.token)
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True

    @app.context_processor
    async def _user() -> dict[str, Any]:
        return {"current_user": g.get("user")}
