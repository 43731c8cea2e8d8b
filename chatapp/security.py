"""Security headers on every response, and trusted-proxy handling of X-Forwarded-*."""
from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from quart import Quart, request


def _origin(url: str | None) -> str:
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def content_security_policy(static_url: str | None) -> str:
    """The CSP: our own scripts and styles only (plus the static asset origin when set)."""
    extra = _origin(static_url)
    own = "'self'" + (f" {extra}" if extra else "")
    return "; ".join([
        "default-src 'self'",
        f"script-src {own}",
        f"style-src {own}",
        f"img-src {own} data:",
        f"font-src {own}",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ])


class TrustedProxyMiddleware:
    """ASGI middleware: take scheme and client address from X-Forwarded-* of trusted proxies only."""

    def __init__(self, app: Any, trusted: list[str]) -> None:
        self.app = app
        self.networks = [ipaddress.ip_network(cidr, strict=False) for cidr in trusted]

    def _trusted(self, host: str | None) -> bool:
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and self.networks:
            client = scope.get("client") or (None, 0)
            if self._trusted(client[0]):
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
                scope = dict(scope)
                proto = headers.get("x-forwarded-proto", "").split(",")[0].strip()
                if proto in ("http", "https"):
                    scope["scheme"] = proto if scope["type"] == "http" else {"http": "ws", "https": "wss"}[proto]
                forwarded = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
                # The right-most address not belonging to a trusted proxy is the real client.
                for hop in reversed(forwarded):
                    if not self._trusted(hop):
                        scope["client"] = (hop, client[1])
                        break
        await self.app(scope, receive, send)


def init_app(app: Quart) -> None:
    """Add the headers after every request and wrap the ASGI app for trusted proxies."""
    csp = content_security_policy(app.config.get("STATIC_URL"))

    @app.after_request
    async def _headers(response: Any) -> Any:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", csp)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if request.scheme == "https":
            headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        return response

    if app.config.get("CHATAPP_TRUSTED_PROXIES"):
        app.asgi_app = TrustedProxyMiddleware(app.asgi_app, app.config["CHATAPP_TRUSTED_PROXIES"])
