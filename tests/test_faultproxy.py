"""The fault proxy itself: each mode does to a real TCP connection what its name says."""
from __future__ import annotations

import asyncio
import time

import pytest

from faultproxy import FaultProxy, proxied_url


@pytest.fixture
async def echo():
    """An echo server in the test's loop; records how many connections reached it."""
    seen = {"connections": 0, "bytes": 0}

    async def handle(reader, writer):
        seen["connections"] += 1
        try:
            while data := await reader.read(65536):
                seen["bytes"] += len(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    seen["port"] = server.sockets[0].getsockname()[1]
    yield seen
    server.close()


@pytest.fixture
def proxy(echo):
    with FaultProxy("127.0.0.1", echo["port"]) as running:
        yield running


async def _connect(proxy):
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _roundtrip(reader, writer, payload: bytes, timeout: float = 2.0) -> bytes:
    writer.write(payload)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)


async def test_pass_through_forwards_both_ways_and_counts(proxy, echo):
    reader, writer = await _connect(proxy)
    assert await _roundtrip(reader, writer, b"hello proxy") == b"hello proxy"
    assert (proxy.bytes_up, proxy.bytes_down, proxy.connections) == (11, 11, 1)
    writer.close()


async def test_latency_delays_each_chunk(proxy):
    reader, writer = await _connect(proxy)
    await _roundtrip(reader, writer, b"warm")
    proxy.latency(150)
    started = time.monotonic()
    await _roundtrip(reader, writer, b"slow")
    # One delay up and one down: at least the configured latency, whatever the machine's speed.
    assert time.monotonic() - started >= 0.15 * 2 * 0.9
    proxy.pass_through()
    writer.close()


async def test_blackhole_accepts_reads_and_never_answers(proxy, echo):
    reader, writer = await _connect(proxy)
    await _roundtrip(reader, writer, b"before")
    proxy.blackhole()
    with pytest.raises(TimeoutError):
        await _roundtrip(reader, writer, b"lost", timeout=0.5)  # an open connection goes silent
    new_reader, new_writer = await _connect(proxy)  # a new connection is accepted...
    with pytest.raises(TimeoutError):
        await _roundtrip(new_reader, new_writer, b"also lost", timeout=0.5)  # ...and never answered
    assert echo["connections"] == 1  # the new one never reached the target
    assert echo["bytes"] == len(b"before")
    assert proxy.bytes_swallowed >= len(b"lostalso lost")
    proxy.pass_through()
    # The connection that lost data is reset rather than left carrying a broken byte stream.
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await _roundtrip(reader, writer, b"after")
    fresh_reader, fresh_writer = await _connect(proxy)
    assert await _roundtrip(fresh_reader, fresh_writer, b"healed") == b"healed"
    for w in (writer, new_writer, fresh_writer):
        w.close()


async def test_reset_sends_rst_to_open_and_new_connections(proxy):
    reader, writer = await _connect(proxy)
    await _roundtrip(reader, writer, b"ok")
    proxy.reset()
    with pytest.raises(ConnectionResetError):
        await _roundtrip(reader, writer, b"x")
    with pytest.raises(ConnectionResetError):  # the reset may even beat the end of connect()
        new_reader, new_writer = await _connect(proxy)
        await _roundtrip(new_reader, new_writer, b"y")
    proxy.pass_through()
    r, w = await _connect(proxy)
    assert await _roundtrip(r, w, b"back") == b"back"
    for each in (writer, w):
        each.close()


async def _read_all(reader) -> tuple[bytes, BaseException | None]:
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(100), 2):
            received += chunk
    except (ConnectionResetError, asyncio.IncompleteReadError) as exc:
        return received, exc
    return received, None


async def test_cut_after_n_bytes_delivers_exactly_n_then_closes(proxy):
    reader, writer = await _connect(proxy)
    proxy.cut_after(5)
    writer.write(b"0123456789")
    await writer.drain()
    assert await _read_all(reader) == (b"01234", None)  # then a clean end of stream (FIN)
    proxy.pass_through()
    writer.close()


async def test_cut_after_n_bytes_with_rst_resets(proxy):
    reader, writer = await _connect(proxy)
    proxy.cut_after(5, rst=True)
    writer.write(b"0123456789")
    await writer.drain()
    received, error = await _read_all(reader)
    assert isinstance(error, ConnectionResetError)
    assert b"01234".startswith(received)  # a reset may discard what was in flight, never add
    proxy.pass_through()
    writer.close()


async def test_refused_target_is_refused_through_the_proxy():
    with FaultProxy("127.0.0.1", 1) as proxy:  # nothing listens on port 1
        # The proxy may reset the connection before our connect call even returns.
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            reader, writer = await _connect(proxy)
            try:
                await _roundtrip(reader, writer, b"anyone?")
            finally:
                writer.close()


def test_proxied_url_keeps_credentials_and_path():
    proxy = FaultProxy("db.example", 5432)
    proxy.port = 40001
    assert proxied_url("postgresql://postgres:pw@127.0.0.1:5432/test?sslmode=disable", proxy) == \
        "postgresql://postgres:pw@127.0.0.1:40001/test?sslmode=disable"
    assert proxied_url("redis://127.0.0.1:6379/0", proxy) == "redis://127.0.0.1:40001/0"
