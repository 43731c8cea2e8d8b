"""The scripted model server, driven through the real openai SDK (3.x, on httpx2).

These tests also pin down what the SDK does in each fault case; the app's generation
code depends on it:

- "cut" (connection closed mid-stream, before the end of the chunked body): iterating the
  stream raises ``openai.APIConnectionError`` (``__cause__`` is ``httpx2.RemoteProtocolError``,
  "incomplete chunked read") after the chunks already received were yielded.
- "no_done" (clean end of body, no finish_reason, no [DONE]): iteration just ends, no
  exception. The only sign is that no chunk carried a finish_reason.
- "error_event" (``data: {"error": ...}`` mid-stream): raises ``openai.APIError`` itself (not
  an ``APIStatusError`` subclass, no ``status_code``); ``.message``, ``.type``, ``.body`` come
  from the error object.
- "status" (HTTP error before the stream): ``create()`` raises ``openai.RateLimitError`` (429) or
  ``openai.InternalServerError`` (500), subclasses of ``APIStatusError``. With the default
  ``max_retries=2`` the SDK retries these itself first, sleeping 0.5 s then 1 s (Retry-After: 0
  is ignored: only 0 < delay <= 60 s is honoured; ``retry-after-ms`` takes precedence, and
  ``x-should-retry: false`` disables the retry). Timeouts and connection errors before the
  response headers are retried too; a stream whose headers arrived is never retried.
- "stall": with a short read timeout the stream raises ``openai.APITimeoutError`` (a subclass of
  ``APIConnectionError``, so catch the timeout first); the SDK never retries a started stream.
- Breaking out of ``async for`` does NOT close the upstream connection; ``await stream.close()``
  (or ``async with stream``) does, and the server sees the disconnect.
"""

from __future__ import annotations

import asyncio
import time

import httpx2
import openai
import pytest

try:
    from model_server import ModelServer, Reply
except ImportError:  # tests/ is a package
    from tests.model_server import ModelServer, Reply

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}]


@pytest.fixture
def server():
    with ModelServer() as srv:
        yield srv


def make_client(server: ModelServer, timeout: float = 5.0, max_retries: int = 0) -> openai.AsyncOpenAI:
    http_client = httpx2.AsyncClient(timeout=httpx2.Timeout(timeout))
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=max_retries,
                              http_client=http_client)


@pytest.mark.asyncio
async def collect(server: ModelServer, reply: Reply | None = None, *, timeout: float = 5.0,
                  include_usage: bool = True, received: list | None = None) -> list:
    """Stream one completion and return its chunks; chunks go to ``received`` as they arrive."""
    if reply is not None:
        server.script(reply)
    received = [] if received is None else received
    async with make_client(server, timeout) as client:
        stream = await client.chat.completions.create(
            model="test-model", messages=MESSAGES, stream=True,
            stream_options={"include_usage": include_usage})
        async with stream:
            async for chunk in stream:
                received.append(chunk)
    return received


def text_of(chunks: list) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_reasons(chunks: list) -> list:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


@pytest.mark.asyncio
async def test_stream_reassembles_text_in_openai_chunk_format(server):
    chunks = await collect(server, Reply.text("Hello brave new world", delay=0.005))
    assert text_of(chunks) == "Hello brave new world"
    assert [c.choices[0].delta.content for c in chunks[1:5]] == ["Hello", " brave", " new", " world"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert finish_reasons(chunks) == ["stop"]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1 and chunks[0].model == "test-model"
    assert server.last_request()["outcome"] == "complete"
    assert server.active_streams == 0


@pytest.mark.asyncio
async def test_usage_chunk_only_when_asked_and_enabled(server):
    chunks = await collect(server, Reply.text("a b c", prompt_tokens=11))
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens,
            chunks[-1].usage.total_tokens) == (11, 3, 14)
    assert all(c.usage is None for c in chunks[:-1])
    for reply, ask in ((Reply.text("a b c", usage=False), True), (Reply.text("a b c"), False)):
        chunks = await collect(server, reply, include_usage=ask)
        assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
        assert text_of(chunks) == "a b c"


@pytest.mark.asyncio
async def test_finish_reason_length(server):
    assert finish_reasons(await collect(server, Reply.text("a b", finish_reason="length"))) == ["length"]


@pytest.mark.asyncio
async def test_cut_raises_api_connection_error_after_partial_text(server):
    # What the SDK does on a mid-stream cut: the chunks received so far are yielded, then
    # iteration raises APIConnectionError (because the chunked body is incomplete). A server
    # that delimits the body by closing the connection instead would end silently, like no_done.
    received: list = []
    with pytest.raises(openai.APIConnectionError) as info:
        await collect(server, Reply.text("one two three", fault="cut", fault_after=2), received=received)
    assert not isinstance(info.value, openai.APITimeoutError)
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)
    assert text_of(received) == "one two" and finish_reasons(received) == []
    assert server.last_request()["outcome"] == "cut"


@pytest.mark.asyncio
async def test_no_done_ends_silently_without_finish_reason(server):
    chunks = await collect(server, Reply.text("one two", fault="no_done"))  # no exception
    assert text_of(chunks) == "one two"
    assert finish_reasons(chunks) == [] and all(c.usage is None for c in chunks)


@pytest.mark.asyncio
async def test_error_event_raises_plain_api_error(server):
    received: list = []
    with pytest.raises(openai.APIError) as info:
        await collect(server, Reply.text("one two three", fault="error_event", fault_after=1,
                                         error_message="overloaded"), received=received)
    assert type(info.value) is openai.APIError  # not APIStatusError / APIConnectionError
    assert info.value.message == "overloaded" and info.value.type == "server_error"
    assert info.value.body["message"] == "overloaded"
    assert text_of(received) == "one"


@pytest.mark.asyncio
@pytest.mark.parametrize("status, exc", [(429, openai.RateLimitError), (500, openai.InternalServerError)])
async def test_status_fault_raises_status_error(server, status, exc):
    server.script(Reply(fault="status", status=status))
    async with make_client(server) as client:
        with pytest.raises(exc) as info:
            await client.chat.completions.create(model="test-model", messages=MESSAGES, stream=True)
    assert info.value.status_code == status and info.value.body["type"]
    assert (info.value.response.headers.get("retry-after") == "0") == (status == 429)
    assert server.count() == 1


@pytest.mark.asyncio
async def test_sdk_retries_status_errors_by_default(server):
    fast = {"retry-after-ms": "5"}  # without it the SDK sleeps 0.5 s, then 1 s
    server.script(Reply(fault="status", status=429, headers=fast),
                  Reply(fault="status", status=503, headers=fast), "finally")
    async with make_client(server, max_retries=2) as client:
        result = await client.chat.completions.create(model="test-model", messages=MESSAGES)
    assert result.choices[0].message.content == "finally" and server.count() == 3
    server.script(Reply(fault="status", status=500, headers={"x-should-retry": "false"}))
    async with make_client(server, max_retries=2) as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="test-model", messages=MESSAGES)
    assert server.count() == 4


@pytest.mark.asyncio
async def test_stall_times_out_and_server_sees_disconnect(server):
    received: list = []
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await collect(server, Reply.text("one two", fault="stall", fault_after=1), timeout=0.3,
                      received=received)
    assert time.monotonic() - started < 3
    assert text_of(received) == "one"
    await server.wait_until_async(lambda: server.active_streams == 0, timeout=2)
    assert server.last_request()["outcome"] == "disconnected"


@pytest.mark.asyncio
async def test_closing_the_sdk_stream_closes_upstream(server):
    server.script(Reply.text("a b c d e f g h", delay=0.2))
    async with make_client(server) as client:
        stream = await client.chat.completions.create(model="test-model", messages=MESSAGES, stream=True)
        async for chunk in stream:
            if chunk.choices[0].delta.content:
                break
        await asyncio.sleep(0.1)
        assert server.active_streams == 1  # breaking out of the loop alone keeps the connection
        await stream.close()
        await server.wait_until_async(lambda: server.active_streams == 0, timeout=2)
    assert server.last_request()["outcome"] == "disconnected"


@pytest.mark.asyncio
async def test_stop_ends_a_stalled_stream(server):
    server.script(Reply.text("one", fault="stall"))
    task = asyncio.create_task(collect(server, timeout=30))
    await server.wait_until_async(lambda: server.active_streams == 1)
    await asyncio.to_thread(server.stop)
    with pytest.raises(openai.APIConnectionError):
        await asyncio.wait_for(task, 5)
    assert server.last_request()["outcome"] == "stopped"


@pytest.mark.asyncio
async def test_delays(server):
    server.script(Reply.text("a b c", first_delay=0.2, delay=0.1))
    stamps = []
    async with make_client(server) as client:
        started = time.monotonic()
        async with await client.chat.completions.create(
                model="test-model", messages=MESSAGES, stream=True) as stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    stamps.append(time.monotonic() - started)
    assert stamps[0] >= 0.2 and stamps[1] - stamps[0] >= 0.09 and stamps[2] - stamps[1] >= 0.09


@pytest.mark.asyncio
async def test_stamp_adds_sent_time(server):
    before = time.time()
    chunks = await collect(server, Reply.text("a b", stamp=True))
    sent = [c.model_extra["x_sent_at"] for c in chunks]
    assert len(sent) == len(chunks) and before <= sent[0] <= sent[-1] <= time.time()


@pytest.mark.asyncio
async def test_non_streaming_and_its_faults(server):
    server.script(Reply.text("Hello there", completion_tokens=5), Reply(fault="status", status=429),
                  Reply.text("x", fault="cut"))
    async with make_client(server) as client:
        result = await client.chat.completions.create(model="test-model-2", messages=MESSAGES)
        assert result.object == "chat.completion" and result.model == "test-model-2"
        assert result.choices[0].message.content == "Hello there"
        assert result.choices[0].finish_reason == "stop"
        assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 5)
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="test-model", messages=MESSAGES)
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(model="test-model", messages=MESSAGES)


@pytest.mark.asyncio
async def test_requests_are_recorded(server):
    await collect(server)
    await collect(server, include_usage=False)
    requests = await server.wait_for_requests_async(2, timeout=1)
    first = requests[0]
    assert first["method"] == "POST" and first["path"] == "/v1/chat/completions"
    assert first["headers"]["authorization"] == "Bearer test"
    assert first["headers"]["content-type"] == "application/json"
    assert first["json"]["model"] == "test-model" and first["json"]["messages"] == MESSAGES
    assert first["json"]["stream"] is True and first["json"]["stream_options"] == {"include_usage": True}
    assert server.count() == 2 and server.count("/v1/models") == 0 and server.count(None) == 2
    server.reset()
    assert server.requests == [] and server.count() == 0


@pytest.mark.asyncio
async def test_default_and_scripted_replies(server):
    assert text_of(await collect(server)) == "You said: hi there"
    server.default = Reply.text("fixed")
    server.script("first", lambda body: Reply.text(body["model"]), Reply(chunks=["x", "y"]))
    assert server.pending == 3
    results = [text_of(await collect(server)) for _ in range(4)]
    assert results == ["first", "test-model", "xy", "fixed"] and server.pending == 0


@pytest.mark.asyncio
async def test_models_endpoint():
    with ModelServer(models=["alpha", "beta"]) as srv:
        async with make_client(srv) as client:
            assert [m.id async for m in client.models.list()] == ["alpha", "beta"]
        assert srv.count("/v1/models") == 1


@pytest.mark.asyncio
async def test_bad_request_and_unknown_path(server):
    async with make_client(server) as client:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="test-model", messages=None)  # type: ignore
        with pytest.raises(openai.NotFoundError):
            await client.embeddings.create(model="test-model", input="x")


@pytest.mark.asyncio
async def test_serves_while_the_caller_loop_is_blocked(server):
    server.script(Reply.text("sync ok"))
    # A blocking call inside a coroutine: the server must not need this loop.
    response = httpx2.post(f"{server.base_url}/chat/completions", timeout=5,
                           json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert response.json()["choices"][0]["message"]["content"] == "sync ok"
    assert server.wait_for_requests(1, timeout=1)[0]["json"]["model"] == "m"


def test_sync_use_and_restart_safety():
    srv = ModelServer()
    with srv:
        response = httpx2.get(f"{srv.base_url}/models", timeout=5)
        assert [m["id"] for m in response.json()["data"]] == ["test-model", "test-model-2"]
        assert response.headers["connection"] == "close"
        with pytest.raises(RuntimeError):
            srv.start()
    srv.stop()  # idempotent
    with pytest.raises(TimeoutError):
        srv.wait_for_requests(5, timeout=0.05, path=None)


def test_reply_text_chunking():
    text = "  Hello,\n\nbrave  new world!\n"
    for size in (1, 2, 3, 10):
        reply = Reply.text(text, chunk_size_words=size)
        assert reply.content == text and len(reply.chunks) == -(-4 // size)
    assert Reply.text("Hello brave new world", chunk_size_words=2).chunks == ["Hello brave", " new world"]
    assert Reply.text("").chunks == [] and Reply.text("   ").chunks == ["   "]
    with pytest.raises(ValueError):
        Reply(fault="explode")
