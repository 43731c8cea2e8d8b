"""A TCP fault proxy for tests: put it between the app and a dependency, then break the network.

Plain asyncio in its own thread with its own loop (like model_server.py), listening on a
loopback port and forwarding to a target host:port. Modes switch at run time, from any thread:

- ``pass_through()``: forward bytes both ways (the default).
- ``latency(ms)``: delay each new connection and each chunk in either direction by ``ms``.
- ``blackhole()``: accept and read, never forward or answer (the peer hangs, as with a dead
  host or a dropped route). Connections open at the time go silent too.
- ``reset()``: reset (RST, via SO_LINGER 0) every open connection, and every new one at once.
- ``cut_after(n)``: forward at most ``n`` bytes towards the client on each connection (counted
  from when the mode was set), then close it (FIN, or RST with ``rst=True``).

``pass_through()`` after ``blackhole()`` resets the connections that lost data while silent (a
real partition makes them unusable too), so clients reconnect instead of reading garbage.
Counters (connections, bytes each way) let a test prove that no traffic reached a dependency.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

__all__ = ["FaultProxy", "proxied_url"]

MODES = ("pass", "latency", "blackhole", "reset", "cut")


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: Optional[asyncio.StreamWriter] = None
    down: int = 0  # bytes sent to the client since the current mode was set
    tainted: bool = False  # data was swallowed: the byte stream is no longer intact
    tasks: list = field(default_factory=list)


def _rst(writer: Optional[asyncio.StreamWriter]) -> None:
    """Close a connection with a TCP reset (SO_LINGER on, timeout 0), never raising."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


def _close(writer: Optional[asyncio.StreamWriter]) -> None:
    if writer is not None and not writer.transport.is_closing():
        writer.close()


def proxied_url(url: str, proxy: "FaultProxy") -> str:
    """``url`` with its host and port replaced by the proxy's (user, password, path kept)."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = (auth + "@" if auth else "") + f"{proxy.host}:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class FaultProxy:
    """A switchable TCP proxy on a loopback port, served from its own thread."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.host, self.port = host, port
        self.mode = "pass"
        self.delay = 0.0
        self.cut_bytes = 0
        self.cut_rst = False
        self.connections = 0  # accepted since start
        self.bytes_up = 0  # client -> target, forwarded
        self.bytes_down = 0  # target -> client, forwarded
        self.bytes_swallowed = 0
        self._conns: set[_Conn] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.AbstractServer] = None

    @classmethod
    def for_url(cls, url: str, default_port: int) -> "FaultProxy":
        """A proxy towards the host and port of a service URL."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or default_port)

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        """Start serving in a background thread; return once the port is bound."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._call(self._open())
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then stop the thread."""
        if self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [task for conn in self._conns for task in conn.tasks]
        for conn in list(self._conns):
            self._drop(conn, rst=True)
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- modes (callable from any thread) ---------------------------------------------------
    @property
    def active(self) -> int:
        """Connections open now."""
        return len(self._conns)

    def pass_through(self) -> None:
        """Forward everything again; connections that lost data while black-holed are reset."""
        self._call(self._set("pass"))

    def latency(self, ms: float) -> None:
        """Delay every chunk (and every new connection) by ``ms`` milliseconds."""
        self.delay = ms / 1000.0
        self._call(self._set("latency"))

    def blackhole(self) -> None:
        """Accept and read, never forward or answer."""
        self._call(self._set("blackhole"))

    def reset(self) -> None:
        """Reset every open connection now, and every new one on arrival."""
        self._call(self._set("reset"))

    def cut_after(self, n: int, rst: bool = False) -> None:
        """Forward at most ``n`` more bytes to the client on each connection, then close it."""
        self.cut_bytes, self.cut_rst = n, rst
        self._call(self._set("cut"))

    async def _set(self, mode: str) -> None:
        self.mode = mode
        for conn in list(self._conns):
            conn.down = 0
            if mode == "reset" or (mode == "pass" and conn.tainted):
                self._drop(conn, rst=True)

    # ---- forwarding -------------------------------------------------------------------------
    def _drop(self, conn: _Conn, rst: bool) -> None:
        (_rst if rst else _close)(conn.client)
        _rst(conn.upstream) if rst else _close(conn.upstream)
        for task in conn.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._conns.discard(conn)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = _Conn(client=writer)
        self._conns.add(conn)
        conn.tasks.append(asyncio.current_task())
        try:
            if self.mode == "reset":
                self._drop(conn, rst=True)
                return
            if self.mode == "latency":
                await asyncio.sleep(self.delay)
            if self.mode == "blackhole":
                conn.tainted = True
                await self._swallow(reader)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                self._drop(conn, rst=True)  # the target refuses: so does the proxy
                return
            conn.upstream = up_writer
            if conn not in self._conns:  # reset while connecting
                _rst(up_writer)
                return
            down = asyncio.ensure_future(self._pump(conn, up_reader, writer, towards_client=True))
            conn.tasks.append(down)
            await self._pump(conn, reader, up_writer, towards_client=False)
            await asyncio.gather(down, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if conn in self._conns:
                self._drop(conn, rst=False)

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(65536):
            self.bytes_swallowed += len(data)

    async def _pump(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    towards_client: bool) -> None:
        try:
            while data := await reader.read(65536):
                mode = self.mode
                if mode == "blackhole":
                    conn.tainted = True
                    self.bytes_swallowed += len(data)
                    continue
                if mode == "latency":
                    await asyncio.sleep(self.delay)
                if mode == "cut" and towards_client:
                    data = data[: max(0, self.cut_bytes - conn.down)]
                if data:
                    if towards_client:  # counted first: the peer may act on the data at once
                        conn.down += len(data)
                        self.bytes_down += len(data)
                    else:
                        self.bytes_up += len(data)
                    writer.write(data)
                    await writer.drain()
                if mode == "cut" and towards_client and conn.down >= self.cut_bytes:
                    self._drop(conn, rst=self.cut_rst)
                    return
            if writer.can_write_eof():  # half-close: pass the peer's FIN on
                writer.write_eof()
        except (OSError, RuntimeError):
            self._drop(conn, rst=True)
