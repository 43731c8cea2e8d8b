"""A stand-in for llama.cpp's server, for testing the local model's process management.

    python tests/local_model_standin.py --port 8002 [--crash-after 2] [--startup-delay 1]

It answers like `python -m llama_cpp.server` does for the app: `GET /v1/models` lists one model
and chat completions stream (echoing the last user message) without a usage block unless
`--usage` is given. The other flags script what a process manager must cope with: a slow start,
a crash after K answers or S seconds, a child that ignores SIGTERM, a grandchild in the process group.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from model_server import ModelServer, Reply, last_user_message  # noqa: E402


def main() -> None:
    """Serve until killed (or until the scripted crash)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-id", default="standin-model")
    parser.add_argument("--crash-after", type=int, default=0, help="exit abruptly (code 3) after K answers")
    parser.add_argument("--die-after", type=float, default=0.0, help="exit abruptly (code 3) S seconds after listening")
    parser.add_argument("--startup-delay", type=float, default=0.0, help="seconds before listening")
    parser.add_argument("--usage", action="store_true", help="send a usage block (llama.cpp often does not)")
    parser.add_argument("--ignore-sigterm", action="store_true", help="only SIGKILL stops it")
    parser.add_argument("--grandchild", action="store_true", help="start a `sleep` child in the same group")
    args = parser.parse_args()

    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.grandchild:
        child = subprocess.Popen(["sleep", "600"])
        print(f"grandchild pid {child.pid}", flush=True)
    print(f"stand-in pid {os.getpid()} starting", flush=True)
    time.sleep(args.startup_delay)

    def reply(body: dict) -> Reply:
        return Reply.text(f"You said: {last_user_message(body)}", usage=args.usage)

    server = ModelServer(host=args.host, port=args.port, models=[args.model_id], default=reply).start()
    print(f"stand-in serving on {server.base_url}", flush=True)
    serving_since = time.monotonic()
    while True:
        time.sleep(0.02)
        if args.die_after and time.monotonic() - serving_since >= args.die_after:
            print(f"stand-in dying after {args.die_after} s", flush=True)
            os._exit(3)
        if args.crash_after and _finished(server) >= args.crash_after:
            time.sleep(0.2)  # let the last answer's final bytes reach the client
            print(f"stand-in crashing after {args.crash_after} answers", flush=True)
            os._exit(3)


def _finished(server: ModelServer) -> int:
    """Chat requests answered so far."""
    return sum(1 for request in server.matching() if request["outcome"] is not None)


if __name__ == "__main__":
    main()
