"""Logging: JSON lines or text, a request id on every line, and one access line per request.

The request id comes from an incoming `X-Request-ID` when it looks sane (a load balancer's
or another service's trace id), else it is generated; it is echoed in the `X-Request-ID`
response header, printed on error pages, and carried by every log line written while the
request runs, including the lines of the generation the request started (background tasks
copy the request's context variables).
"""
from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from quart import Quart, g, request

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+=-]{7,127}$")
QUIET_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "metrics", "static"})  # logged at DEBUG
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

_request: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("chatapp_request", default=None)
access_log = logging.getLogger("chatapp.access")


def request_id_from(header: str | None) -> str:
    """The incoming id when it is 8-128 safe characters, else a fresh one."""
    if header and _SANE_ID.match(header):
        return header
    return uuid.uuid4().hex


def current_request_id() -> str:
    """The id of the request this code runs for ('' outside requests)."""
    fields = _request.get()
    return fields["request_id"] if fields else ""


def forget_request() -> None:
    """Log without the request's fields from here on (a task that outlives the request that made it)."""
    _request.set(None)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the request's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_request.get() or {})
        for key in ("status", "duration_ms"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic one-line format, with the request id in brackets ('-' outside requests)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = current_request_id() or "-"
        return super().format(record)


def configure(log_format: str) -> None:
    """Install (once per process) a stderr handler in the chosen format on the root logger.

    With format `text` and logging already configured by the host (pytest, an embedding
    program), the host's set-up is left alone.
    """
    # The HTTP clients log every request at INFO: one line per model call and S3 request, on
    # the path to the first token. Their warnings still show.
    for noisy in ("httpx2", "httpcore2", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root = logging.getLogger()
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    ours = [h for h in root.handlers if getattr(h, "chatapp", False)]
    if ours:
        for handler in ours:
            handler.setFormatter(formatter)
        return
    if root.handlers and log_format != "json":
        return
    handler = logging.StreamHandler()
    handler.chatapp = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter)
    root.addHandler(handler)
    if root.level == logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def init_app(app: Quart) -> None:
    """Request ids, access lines and request metrics; register this before every other hook."""
    from . import metrics

    configure(app.config["CHATAPP_LOG_FORMAT"])

    @app.before_request
    async def _start() -> None:
        g.request_started = time.perf_counter()
        g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        # The query string stays out of logs: search terms are user data.
        _request.set({"request_id": g.request_id, "method": request.method, "path": request.path})

    @app.after_request
    async def _finish(response: Any) -> Any:
        # Registered first, so it runs last: it sees the final status and headers.
        request_id = g.get("request_id") or request_id_from(None)
        response.headers[REQUEST_ID_HEADER] = request_id
        metrics.record_request(response.status_code)
        started = g.get("request_started")
        duration = round((time.perf_counter() - started) * 1000, 1) if started else None
        level = logging.DEBUG if request.endpoint in QUIET_ENDPOINTS else logging.INFO
        access_log.log(level, "%s %s %s", request.method, request.path, response.status_code,
                       extra={"status": response.status_code, "duration_ms": duration})
        return response
