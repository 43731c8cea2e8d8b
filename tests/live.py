"""The app under Hypercorn on a loopback port, and a cookie-keeping HTTP user for it.

Quart's test client collects a streaming body before returning it, so streaming, resume
and multi-instance tests talk to real servers over real HTTP. Each server runs in its own
thread with its own event loop, like a separate instance.
"""
from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from typing import Any

import httpx2
from hypercorn.asyncio import serve
from hypercorn.config import Config

from chatapp import create_app

CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"')
PLACEHOLDER_RE = re.compile(r'sse-connect="/messages/([0-9a-f-]{36})/stream"')


def free_port() -> int:
    """A currently free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """One app instance served by Hypercorn in a background thread."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self.app = create_app(overrides)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> "LiveServer":
        """Serve in the background; return once /healthz answers."""
        self._thread = threading.Thread(target=self._run, name=f"live-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error:
                raise RuntimeError(f"live server failed: {self.error!r}")
            try:
                # Hypercorn binds only after the app's startup (before_serving) finished.
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("live server did not start")

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            config = Config()
            config.bind = [f"127.0.0.1:{self.port}"]
            config.graceful_timeout = 1.0
            config.accesslog = None
            await serve(self.app, config, shutdown_trigger=self._stop.wait)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by start()
            self.error = exc

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down gracefully (as on SIGTERM) and wait for the thread."""
        if self._thread is None or not self._thread.is_alive():
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self, coro_factory, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's own loop (to inspect its state)."""
        future = asyncio.run_coroutine_threadsafe(coro_factory(), self._loop)
        return future.result(timeout)


class WebUser:
    """A browser-like HTTP client: keeps cookies, sends the CSRF token, speaks htmx."""

    def __init__(self, base_url: str, cookies: httpx2.Cookies | None = None) -> None:
        self.client = httpx2.AsyncClient(base_url=base_url, cookies=cookies, timeout=20.0,
                                         follow_redirects=False)
        self.token = ""

    async def close(self) -> None:
        await self.client.aclose()

    async def refresh_token(self, path: str = "/") -> str:
        response = await self.client.get(path)
        match = CSRF_RE.search(response.text)
        assert match, f"no csrf token on {path}: {response.status_code}"
        self.token = match.group(1)
        return self.token

    async def signup(self, email: str, password: str = "password123") -> None:
        await self.refresh_token("/signup")
        response = await self.client.post("/signup", data={"email": email, "password": password,
                                                           "csrf_token": self.token})
        assert response.status_code == 303, response.text
        await self.refresh_token("/")

    async def post(self, path: str, data: dict | None = None, htmx: bool = True) -> httpx2.Response:
        headers = {"X-CSRF-Token": self.token}
        if htmx:
            headers["HX-Request"] = "true"
        return await self.client.post(path, data=data or {}, headers=headers)

    async def new_thread(self) -> str:
        response = await self.post("/threads", htmx=False)
        assert response.status_code == 303, response.text
        return response.headers["location"].rsplit("/", 1)[-1]

    async def send(self, thread_id: str, content: str) -> str:
        """Send a message; return the id of the answer the reply's placeholder streams."""
        response = await self.post(f"/threads/{thread_id}/messages", {"content": content})
        assert response.status_code == 200, response.text
        match = PLACEHOLDER_RE.search(response.text)
        assert match, response.text
        return match.group(1)
