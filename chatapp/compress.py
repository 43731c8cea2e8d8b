"""gzip for text responses (pages, fragments, CSS, JS, JSON); never for event streams.

Behind nginx or a CDN this is done again at the edge for free; behind an ALB nobody else does
it, and a phone on a slow link feels every kilobyte.
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from typing import Any

from quart import Quart, request
from quart.wrappers.response import DataBody, FileBody

COMPRESSIBLE = ("text/html", "text/css", "text/plain", "application/javascript", "text/javascript",
                "application/json", "image/svg+xml")
MIN_BYTES = 512


@lru_cache(maxsize=128)
def _gzip_static(path: str, etag: str, data: bytes) -> bytes:
    """Static files are compressed once per version (the ETag changes with the file)."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def _wants_gzip() -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "").lower()


async def compress(response: Any) -> Any:
    """Gzip a finished text body when the client accepts it."""
    if (response.status_code < 200 or response.status_code in (204, 206, 304)
            or "Content-Encoding" in response.headers
            or not isinstance(response.response, (DataBody, FileBody))
            or not (response.mimetype or "").startswith(COMPRESSIBLE)):
        return response
    response.vary.add("Accept-Encoding")
    if not _wants_gzip():
        return response
    data = await response.get_data(as_text=False)
    if len(data) < MIN_BYTES:
        return response
    if isinstance(response.response, FileBody):
        body = _gzip_static(request.path, response.headers.get("ETag", ""), data)
    else:
        body = gzip.compress(data, compresslevel=6, mtime=0)
    response.set_data(body)
    response.headers["Content-Encoding"] = "gzip"
    response.headers["Content-Length"] = str(len(body))
    return response


def init_app(app: Quart) -> None:
    """Compress after every other after_request hook has finished the body."""
    app.after_request(compress)
