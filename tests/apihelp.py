"""Helpers for API tests: make API tokens through the settings page, talk JSON with them."""
from __future__ import annotations

import re

from bs4 import BeautifulSoup

TOKEN_RE = re.compile(r"chatapp_[A-Za-z0-9_-]{43}")


def token_in(html: str) -> str | None:
    """The freshly created token a settings reply shows (None when it shows none)."""
    soup = BeautifulSoup(html, "html.parser")
    shown = soup.select_one("code.token-value")
    return shown.get_text(strip=True) if shown else None


async def create_token(actions, name: str = "test token") -> str:
    """Create an API token as the logged-in user of `actions`; return the raw token."""
    response = await actions.post("/settings/tokens", {"name": name})
    assert response.status_code == 201, response.status_code
    token = token_in(await response.get_data(as_text=True))
    assert token and TOKEN_RE.fullmatch(token), token
    return token


def bearer(token: str) -> dict[str, str]:
    """Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


class ApiClient:
    """A JSON client of /api/v1 using one token and a client that carries no cookie."""

    def __init__(self, client, token: str) -> None:
        self.client, self.token = client, token

    async def call(self, method: str, path: str, json=None, **kwargs):
        headers = {**bearer(self.token), **kwargs.pop("headers", {})}
        if json is not None:
            kwargs["json"] = json
        return await self.client.open(path, method=method, headers=headers, **kwargs)

    async def get(self, path: str, **kwargs):
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, json=None, **kwargs):
        return await self.call("POST", path, json, **kwargs)

    async def patch(self, path: str, json=None, **kwargs):
        return await self.call("PATCH", path, json, **kwargs)

    async def delete(self, path: str, **kwargs):
        return await self.call("DELETE", path, **kwargs)


async def api_client(app, actions, name: str = "test token") -> ApiClient:
    """An API client for the user of `actions`, on a fresh test client without cookies."""
    return ApiClient(app.test_client(), await create_token(actions, name))
