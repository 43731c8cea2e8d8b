"""A scripted OpenAI-compatible HTTP server for tests (and for humans: ``--port 8001``).

Plain asyncio in its own thread with its own loop, so it serves whether or not the caller's
loop is running (or blocked). Streams use chunked transfer encoding like the real API, so a
connection cut before the terminating chunk is visible to the client as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import http
import json
import threading
import time
import uuid
from typing import Any, Callable, Optional

from model_replies import (  # re-exported: tests import them from here
    CHAT, FAULTS, MARKDOWN_DEMO, Reply, ReplySpec, demo_reply, echo_reply, last_user_message,
)

__all__ = ["ModelServer", "Reply", "echo_reply", "demo_reply", "last_user_message", "FAULTS", "MARKDOWN_DEMO"]


def _phrase(status: int) -> str:
    return http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else "Status"


def _error_body(status: int, message: Optional[str]) -> dict:
    """An OpenAI-style error body."""
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
            429: "rate_limit_error"}.get(status, "server_error")
    code = {429: "rate_limit_exceeded", 404: "not_found"}.get(status)
    message = message or f"Scripted error: {status} {_phrase(status)}"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """Status line and headers of a response."""
    lines = [f"HTTP/1.1 {status} {_phrase(status)}", *(f"{k}: {v}" for k, v in headers),
             f"x-request-id: req_{uuid.uuid4().hex}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _usage(prompt: int, reply: Reply, sent: int) -> dict:
    """The usage block; completion tokens default to the number of chunks sent."""
    completion = reply.completion_tokens if reply.completion_tokens is not None else sent
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close a connection after flushing what was written, never raising."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 1)
    except (Exception, asyncio.CancelledError):
        pass


async def _pause(seconds: float, gone: asyncio.Event) -> bool:
    """Sleep ``seconds``; return True (early) if the client went away."""
    if gone.is_set() or seconds <= 0:
        return gone.is_set()
    try:
        await asyncio.wait_for(gone.wait(), seconds)
        return True
    except TimeoutError:
        return False


async def _watch(reader: asyncio.StreamReader, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client closes its side (EOF) or resets the connection."""
    try:
        while await reader.read(65536):
            pass
    except OSError:
        pass
    gone.set()


class ModelServer:
    """A scripted OpenAI-compatible server on a loopback port, served from its own thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, models: Optional[list[str]] = None,
                 default: Optional[ReplySpec] = None) -> None:
        self.host, self.port = host, port
        self.models = list(models) if models is not None else ["test-model", "test-model-2"]
        self.default: ReplySpec = default if default is not None else echo_reply
        self.requests: list[dict] = []
        self.active_streams = 0
        self._queue: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._tasks: set[asyncio.Task] = set()

    # ---- lifecycle ----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The URL to use as OPENAI_BASE_URL, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "ModelServer":
        """Start serving in a background thread; returns self once the port is bound."""
        if self._loop is not None:
            raise RuntimeError("ModelServer already started")
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(loop,), name="model-server", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(), loop).result(10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop serving: close open connections (stalled streams included) and join the thread."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- scripting and recording ------------------------------------------------------
    def script(self, *replies: ReplySpec) -> None:
        """Queue the behaviour of the next chat requests (FIFO): Reply, str, or body -> Reply."""
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        """Forget recorded requests and queued replies (the default reply is kept)."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    @property
    def pending(self) -> int:
        """Number of scripted replies not used yet."""
        return len(self._queue)

    def matching(self, path: Optional[str] = CHAT) -> list[dict]:
        """A snapshot of the recorded requests on ``path`` (all paths when None)."""
        with self._lock:
            return [r for r in self.requests if path is None or r["path"] == path]

    def count(self, path: Optional[str] = CHAT) -> int:
        """Number of requests received on ``path`` (all paths when None)."""
        return len(self.matching(path))

    def last_request(self, path: Optional[str] = CHAT) -> Optional[dict]:
        """The most recent request on ``path`` (any path when None), or None."""
        return (self.matching(path) or [None])[-1]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate()`` is true; raise TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(0.005)

    async def wait_until_async(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Like wait_until, without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            await asyncio.sleep(0.005)

    def wait_for_requests(self, n: int, timeout: float = 5.0, path: Optional[str] = CHAT) -> list[dict]:
        """Block until ``n`` requests on ``path`` arrived; return the requests on ``path``."""
        self.wait_until(lambda: self.count(path) >= n, timeout)
        return self.matching(path)

    async def wait_for_requests_async(self, n: int, timeout: float = 5.0,
                                      path: Optional[str] = CHAT) -> list[dict]:
        """Like wait_for_requests, without blocking the caller's event loop."""
        await self.wait_until_async(lambda: self.count(path) >= n, timeout)
        return self.matching(path)

    def _next_reply(self, body: dict) -> Reply:
        with self._lock:
            spec = self._queue.popleft() if self._queue else self.default
        if isinstance(spec, str):
            return Reply.text(spec)
        return copy.copy(spec if hasattr(spec, "chunks") else spec(body))

    # ---- HTTP ---------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._dispatch(await self._read_request(reader), reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that went away or spoke garbage
        except asyncio.CancelledError:  # the server is stopping
            pass
        finally:
            self._tasks.discard(task)
            await _close(writer)

    async def _read_request(self, reader: asyncio.StreamReader) -> dict:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = {}
        for line in filter(None, header_lines):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            raw = b""
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                raw += (await reader.readexactly(size + 2))[:-2]
            await reader.readuntil(b"\r\n")
        else:
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path, _, query = target.partition("?")
        request = {"method": method, "path": path, "query": query, "headers": headers, "json": body,
                   "raw": raw, "time": time.time(), "outcome": None, "reply": None}
        with self._lock:
            self.requests.append(request)
        return request

    async def _respond_json(self, writer: asyncio.StreamWriter, status: int, payload: dict,
                            extra: Optional[list[tuple[str, str]]] = None) -> None:
        data = json.dumps(payload).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *(extra or [])]
        writer.write(_head(status, headers) + data)
        await writer.drain()

    async def _dispatch(self, request: dict, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        path, method, body = request["path"], request["method"], request["json"]
        if path == "/v1/models" and method == "GET":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in self.models]
            await self._respond_json(writer, 200, {"object": "list", "data": data})
        elif path == CHAT and method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                await self._respond_json(writer, 400, _error_body(400, "'messages' must be a list"))
                return
            reply = request["reply"] = self._next_reply(body)
            gone = asyncio.Event()
            watcher = asyncio.create_task(_watch(reader, gone))
            try:
                request["outcome"] = await self._chat(request, reply, writer, gone)
            except asyncio.CancelledError:
                request["outcome"] = "stopped"  # by ModelServer.stop()
                raise
            finally:
                watcher.cancel()
        else:
            await self._respond_json(writer, 404, _error_body(404, f"No route {method} {path}"))

    async def _chat(self, request: dict, reply: Reply, writer: asyncio.StreamWriter, gone: asyncio.Event) -> str:
        """Answer one chat completion; return the outcome recorded on the request."""
        body = request["json"]
        if reply.fault == "status":
            if await _pause(reply.first_delay, gone):
                return "disconnected"
            extra = [("Retry-After", "0")] if reply.status == 429 else []
            error = _error_body(reply.status, reply.error_message)
            request["outcome"] = "status"  # recorded before the client can see the answer
            await self._respond_json(writer, reply.status, error, extra + list(reply.headers.items()))
            return "status"
        model = body.get("model") or self.models[0]
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"] if isinstance(m, dict))
        if body.get("stream"):
            return await self._stream(request, reply, model, prompt, writer, gone)
        if reply.fault == "cut":
            return "cut"  # closed without any response
        if reply.fault == "stall" or await _pause(reply.first_delay, gone):
            await gone.wait()
            return "disconnected"
        message = {"role": "assistant", "content": reply.content, "refusal": None}
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": model, "system_fingerprint": "fp_test",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
        }
        if reply.usage:
            payload["usage"] = _usage(prompt, reply, len(reply.chunks))
        request["outcome"] = "complete"
        await self._respond_json(writer, 200, payload)
        return "complete"

    async def _stream(self, request: dict, reply: Reply, model: str, prompt: int,
                      writer: asyncio.StreamWriter, gone: asyncio.Event) -> str:
        """Stream chat.completion.chunk events, or the scripted fault; return the outcome."""
        include_usage = bool((request["json"].get("stream_options") or {}).get("include_usage"))
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model, "system_fingerprint": "fp_test"}

        async def send(payload: bytes) -> bool:
            if gone.is_set():
                return False
            try:
                writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))  # one HTTP chunk
                await writer.drain()
                return True
            except (OSError, RuntimeError):
                gone.set()
                return False

        def event(delta: Optional[dict], finish: Optional[str] = None, **more: Any) -> bytes:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish}]
            chunk = {**base, "choices": choices, **({"usage": None} if include_usage else {}), **more}
            if reply.stamp:
                chunk["x_sent_at"] = time.time()
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        headers = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
                   ("Transfer-Encoding", "chunked")]
        writer.write(_head(200, headers))
        self.active_streams += 1
        open_ = True

        def finish(outcome: str) -> str:
            """Record the outcome and close the count before the client can see the end."""
            nonlocal open_
            request["outcome"] = outcome
            if open_:
                self.active_streams, open_ = self.active_streams - 1, False
            return outcome

        try:
            limited = reply.fault in ("cut", "error_event", "stall") and reply.fault_after is not None
            chunks = reply.chunks[: reply.fault_after] if limited else reply.chunks
            if not await send(event({"role": "assistant", "content": ""})):
                return "disconnected"
            if await _pause(reply.first_delay, gone):
                return "disconnected"
            for i, text in enumerate(chunks):
                if (i and await _pause(reply.delay, gone)) or not await send(event({"content": text})):
                    return "disconnected"
            if reply.fault == "cut":
                return finish("cut")  # closed without the terminating zero-size chunk
            if reply.fault == "stall":
                await gone.wait()
                return "disconnected"
            if reply.fault == "error_event":
                error = _error_body(500, reply.error_message or "Scripted error in the middle of a stream")
                await send(b"data: " + json.dumps(error).encode() + b"\n\n")
            elif reply.fault is None:
                await send(event({}, reply.finish_reason))
                if include_usage and reply.usage:
                    await send(event(None, usage=_usage(prompt, reply, len(chunks))))
                await send(b"data: [DONE]\n\n")
            outcome = finish(reply.fault or "complete")
            return outcome if await send(b"") else "disconnected"  # zero-size chunk: clean end
        finally:
            await _close(writer)
            if open_:
                finish("disconnected")


def main() -> None:
    """Serve until interrupted, for pointing a development app at it."""
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    server = ModelServer(host=args.host, port=args.port, default=demo_reply).start()
    print(f"Serving on {server.base_url}\nRun the app with OPENAI_BASE_URL={server.base_url} "
          "OPENAI_API_KEY=test\nSay 'markdown' for a Markdown demo. Ctrl-C stops.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
