"""Acting as one browser session through Quart's test client: CSRF tokens, forms, threads."""
from __future__ import annotations

import re

CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"')


class Actions:
    """Multi-step user actions through HTTP, as a browser would do them."""

    def __init__(self, client):
        self.client = client

    async def csrf(self, path: str = "/login") -> str:
        """The CSRF token the page at `path` carries."""
        response = await self.client.get(path)
        match = CSRF_RE.search(await response.get_data(as_text=True))
        assert match, f"no csrf meta tag on {path}"
        return match.group(1)

    async def signup(self, email: str = "ada@example.com", password: str = "correct horse battery"):
        """Sign up (and so log in)."""
        token = await self.csrf("/signup")
        return await self.client.post("/signup", form={"email": email, "password": password, "csrf_token": token})

    async def login(self, email: str, password: str):
        token = await self.csrf("/login")
        return await self.client.post("/login", form={"email": email, "password": password, "csrf_token": token})

    async def post(self, path: str, form: dict | None = None, htmx: bool = False, token: str | None = None):
        """A POST carrying this session's CSRF token."""
        token = token if token is not None else await self.csrf("/")
        headers = {"HX-Request": "true"} if htmx else {}
        return await self.client.post(path, form={**(form or {}), "csrf_token": token}, headers=headers)

    async def new_thread(self, content: str = "") -> str:
        """Create a thread; return its id."""
        response = await self.post("/threads", {"content": content} if content else {})
        assert response.status_code == 303, response.status_code
        return response.headers["Location"].rsplit("/", 1)[-1]
