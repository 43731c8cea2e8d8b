"""A user's own preferences, kept in users.settings (jsonb): defaults for new threads and the theme."""
from __future__ import annotations

from typing import Any

from quart import current_app

from . import chat
from .models import app_settings

THEMES = ("system", "light", "dark")
MAX_SYSTEM_PROMPT_CHARS = 8000


def theme(user: Any) -> str:
    """The user's theme override ("system" when none is saved)."""
    value = (getattr(user, "settings", None) or {}).get("theme")
    return value if value in THEMES else "system"


async def new_thread_defaults(user: Any) -> tuple[str, str]:
    """(model, system prompt) for a new thread: the user's saved defaults, else the app's.

    A saved model that an admin has since removed from the list falls back to the app default,
    so old preferences never make thread creation fail.
    """
    saved = user.settings or {}
    runtime = await app_settings.effective(current_app)
    model = saved.get("default_model") or ""
    if not model or model not in await chat.available_models():
        model = runtime["CHATAPP_DEFAULT_MODEL"]
    return model, saved.get("system_prompt") or ""
