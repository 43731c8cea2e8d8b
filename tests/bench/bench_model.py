"""The scripted model server for benchmarks, run as its own process (its own GIL and core).

The last user message picks the behaviour, so the runner scripts replies without talking to
this process: `bench:ttft`, `bench:chat:<tokens>:<ms>`, `bench:stamp:<chunks>:<ms>`,
`bench:flood:<tokens>` and `bench:stall`. Anything else (automatic titles) gets a short text.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_server import ModelServer, Reply, last_user_message  # noqa: E402

FIRST_TOKEN = "alpha"  # the client looks for this word to time the first token
TTFT_TEXT = "alpha beta gamma delta epsilon"


class StampedChunks(list):
    """Chunks whose text is the wall-clock time at which each is handed to the socket.

    ModelServer iterates the chunk list right before sending each chunk, so stamping inside
    the iterator is stamping at send time. The pause between chunks is a blocking sleep here
    (not the server's own asyncio delay, which runs after the chunk is taken): this blocks the
    server's loop, which is fine because the relay measurement runs one answer at a time.
    """

    def __init__(self, count: int, interval: float) -> None:
        super().__init__([""] * count)
        self.interval = interval

    def __iter__(self):
        for i in range(len(self)):
            if i:
                time.sleep(self.interval)
            # A blank line every 8 chunks closes a Markdown block, as real answers do.
            end = "\n\n" if i % 8 == 7 else " "
            yield f"<t={time.time():.6f}>{end}"


def flood_words(count: int) -> list[str]:
    """`count` one-word chunks forming paragraphs of 40 words (Markdown blocks)."""
    return [f"w{i}" + ("\n\n" if i % 40 == 39 else " ") for i in range(count)]


def bench_reply(body: dict) -> Reply:
    """Pick the scripted reply from the last user message."""
    text = last_user_message(body)
    if not body.get("stream"):
        return Reply.text("Benchmark conversation title")
    parts = text.split(":")
    kind = parts[1] if len(parts) > 1 and parts[0] == "bench" else ""
    if kind == "ttft":
        return Reply.text(TTFT_TEXT)
    if kind == "chat":  # a paced answer: <tokens> words, <ms> apart
        count, millis = int(parts[2]), float(parts[3])
        return Reply(chunks=[FIRST_TOKEN + " "] + flood_words(count - 1), delay=millis / 1000)
    if kind == "stamp":
        return Reply(chunks=StampedChunks(int(parts[2]), float(parts[3]) / 1000))
    if kind == "flood":
        return Reply(chunks=flood_words(int(parts[2])))
    if kind == "stall":  # one chunk, then silence until the client goes away
        return Reply(chunks=["Waiting "], fault="stall", fault_after=1)
    return Reply.text("You said: " + text[:200])


def main() -> None:
    """Serve on the given port until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ModelServer(port=args.port, default=bench_reply).start()
    # Recorded requests would grow without bound over thousands of benchmark requests.
    server.requests = _Forgetful()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"ready {server.base_url}", flush=True)
    stop.wait()
    server.stop()


class _Forgetful(list):
    """A request log that keeps nothing."""

    def append(self, item) -> None:  # noqa: D102 - list API
        pass


if __name__ == "__main__":
    main()
