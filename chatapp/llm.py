"""The model client: openai.AsyncOpenAI against OpenAI or any OpenAI-compatible server.

The SDK sends every request (base URL, auth, status errors become its exception classes), but
the answer's event stream is read here with `json.loads` per `data:` line: the SDK's typed chunk
objects cost ~300 us each, twenty times the parse, and were most of a busy worker's CPU. The
SDK (32 MiB of modules) is imported when the first model call needs it, not at start-up.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator

import httpx2
from quart import Quart

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

NOT_CONFIGURED = (
    "No model is configured. Set OPENAI_API_KEY (for OpenAI) or OPENAI_BASE_URL (for an "
    "OpenAI-compatible server such as Ollama, vLLM, llama.cpp or LM Studio, e.g. "
    "OPENAI_BASE_URL=http://127.0.0.1:11434/v1) and restart chatapp."
)
MODELS_CACHE_SECONDS = 300


def _retryable() -> tuple[type[Exception], ...]:
    """Errors worth another try, but only before the first token: a started answer is never resent."""
    import openai

    return (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


class ModelError(Exception):
    """The model call failed; the message is fit to show the user."""


@dataclass
class Usage:
    """Token counts of one answer; estimated when the server sent none."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool


def configured(app: Quart) -> bool:
    """True when a provider is configured (an API key or a base URL)."""
    return bool(app.config.get("OPENAI_API_KEY") or app.config.get("OPENAI_BASE_URL"))


def client_of(app: Quart) -> openai.AsyncOpenAI | None:
    """The shared client, built on first use (None without a provider)."""
    client = app.extensions.get("llm")
    if client is None and configured(app):
        client = app.extensions["llm"] = make_client(app)
    return client


def make_client(app: Quart) -> openai.AsyncOpenAI | None:
    """Build the shared client (None without a provider): own http client, no SDK retries."""
    if not configured(app):
        return None
    import openai

    timeout = httpx2.Timeout(
        connect=app.config["CHATAPP_MODEL_CONNECT_TIMEOUT"],
        read=app.config["CHATAPP_MODEL_READ_TIMEOUT"],
        write=30.0,
        pool=10.0,
    )
    http_client = httpx2.AsyncClient(
        timeout=timeout, follow_redirects=False,
        limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
    )
    return openai.AsyncOpenAI(
        # Local servers ignore the key, but the SDK refuses to start without one.
        api_key=app.config.get("OPENAI_API_KEY") or "not-needed",
        base_url=app.config.get("OPENAI_BASE_URL") or None,
        http_client=http_client,
        max_retries=0,
    )


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) for servers that send no usage."""
    return max(1, (len(text) + 3) // 4) if text else 0


def is_model_error(exc: BaseException) -> bool:
    """True for a failure of the model call (not worth a traceback in the log)."""
    import openai

    return isinstance(exc, (openai.APIError, json.JSONDecodeError))


def describe_error(exc: BaseException) -> str:
    """A short, user-facing description of a model failure."""
    import openai

    if isinstance(exc, openai.AuthenticationError):
        return "The model provider rejected the API key (check OPENAI_API_KEY)."
    if isinstance(exc, openai.NotFoundError):
        return "The model provider does not know this model."
    if isinstance(exc, openai.RateLimitError):
        return "The model provider is rate-limiting requests. Try again in a moment."
    if isinstance(exc, openai.APITimeoutError):
        return "The model took too long to answer."
    if isinstance(exc, openai.APIConnectionError):
        return "Could not reach the model server."
    if isinstance(exc, openai.APIStatusError):
        return f"The model server answered with an error ({exc.status_code})."
    if isinstance(exc, openai.APIError):
        return f"The model server reported an error: {getattr(exc, 'message', exc)}"[:300]
    return "The model call failed."


class ReplyStream:
    """Async iterator of text deltas; finish_reason and usage are read after it ends."""

    def __init__(self, client: openai.AsyncOpenAI, messages: list[dict], model: str,
                 params: dict[str, Any], retries: int) -> None:
        self.client, self.messages, self.model = client, messages, model
        self.params, self.retries = params, retries
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.text_parts: list[str] = []
        self._response: httpx2.Response | None = None

    async def _open(self) -> httpx2.Response:
        body = {"model": self.model, "messages": self.messages, "stream": True,
                "stream_options": {"include_usage": True}, **self.params}
        retryable = _retryable()
        for attempt in range(self.retries + 1):
            try:
                # cast_to=Response: the SDK checks the status and hands over the unread body.
                return await self.client.post("/chat/completions", body=body, cast_to=httpx2.Response,
                                              stream=True)
            except retryable as exc:
                if attempt == self.retries:
                    raise
                delay = min(4.0, 0.25 * 2 ** attempt)
                log.info("model request failed before the first token (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def __aiter__(self) -> AsyncIterator[str]:
        self._response = await self._open()
        try:
            async for chunk in read_events(self._response):
                usage = chunk.get("usage")
                if usage:
                    self.usage = Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, False)
                for choice in chunk.get("choices") or ():
                    if choice.get("finish_reason"):
                        self.finish_reason = choice["finish_reason"]
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        # PostgreSQL text cannot hold NUL; the same replacement reaches every reader.
                        text = text.replace("\x00", "\ufffd")
                        self.text_parts.append(text)
                        yield text
        finally:
            await self.close()
        if self.usage is None:
            prompt = sum(estimate_tokens(m.get("content", "")) for m in self.messages)
            self.usage = Usage(prompt, estimate_tokens("".join(self.text_parts)), True)

    async def close(self) -> None:
        """Close the upstream response so the provider stops generating."""
        if self._response is not None:
            response, self._response = self._response, None
            try:
                await response.aclose()
            except Exception:  # closing a broken connection may raise; nothing to save
                log.debug("closing the model stream failed", exc_info=True)


async def read_events(response: httpx2.Response) -> AsyncIterator[dict]:
    """The JSON objects of an OpenAI-style event stream, until `[DONE]`; errors raise like the SDK."""
    data: list[bytes] = []
    pending = b""
    try:
        # Bytes split here rather than httpx's text and line decoders: two layers less per token.
        async for chunk in response.aiter_bytes():
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if line.startswith(b"data:"):
                    data.append(line[6:] if line.startswith(b"data: ") else line[5:])
                elif not line.strip(b"\r") and data:  # a blank line ends an event
                    payload, data = b"\n".join(data).rstrip(b"\r"), []
                    if payload.startswith(b"[DONE]"):
                        return
                    event = _decode(payload, response.request)
                    if event is not None:
                        yield event
                # `event:`, `id:`, `retry:` and comments carry nothing for chat completions.
        if pending.startswith(b"data:"):  # the last line lacked its newline
            data.append(pending[6:] if pending.startswith(b"data: ") else pending[5:])
        if data and not data[0].startswith(b"[DONE]"):  # the last event lacked its blank line
            event = _decode(b"\n".join(data).rstrip(b"\r"), response.request)
            if event is not None:
                yield event
    except httpx2.TimeoutException as exc:
        import openai

        raise openai.APITimeoutError(request=response.request) from exc
    except httpx2.TransportError as exc:
        import openai

        raise openai.APIConnectionError(request=response.request) from exc


def _decode(payload: bytes, request: httpx2.Request) -> dict | None:
    """One event's JSON; an `error` object raises openai.APIError as the SDK would."""
    chunk = json.loads(payload)
    if not isinstance(chunk, dict):
        return None
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str) or not message:
            message = "An error occurred during streaming"
        import openai  # only on this error path: _decode runs for every chunk

        raise openai.APIError(message, request, body=error)
    return chunk


def stream_reply(app: Quart, client: openai.AsyncOpenAI, messages: list[dict], model: str,
                 params: dict[str, Any]) -> ReplyStream:
    """Start streaming an answer: iterate the result for text deltas."""
    return ReplyStream(client, messages, model, params, app.config["CHATAPP_MODEL_RETRIES"])


async def complete(client: openai.AsyncOpenAI, messages: list[dict], model: str, max_tokens: int = 30) -> str:
    """One short non-streaming completion (used for automatic titles)."""
    reply = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
    return (reply.choices[0].message.content or "").strip() if reply.choices else ""


async def list_models(app: Quart) -> list[str]:
    """The provider's model ids from /v1/models, cached in Redis; [] when unavailable."""
    client = client_of(app)
    if client is None:
        return []
    # A copy in this process too: pages must not ask the provider each time Redis is down.
    memo = app.extensions.get("models_memo")
    if memo and time.monotonic() - memo[0] < MODELS_CACHE_SECONDS:
        return memo[1]
    store = app.redis
    key = store.key("models")
    cached = await store.guarded(lambda: store.fast.get(key))
    if cached:
        models = json.loads(cached)
        app.extensions["models_memo"] = (time.monotonic(), models)
        return models
    try:
        async with asyncio.timeout(5):
            page = await client.models.list()
        models = sorted(m.id for m in page.data)
    except Exception as exc:
        log.warning("could not list models: %s", exc)
        return []
    app.extensions["models_memo"] = (time.monotonic(), models)
    await store.guarded(lambda: store.fast.set(key, json.dumps(models), ex=MODELS_CACHE_SECONDS))
    return models
