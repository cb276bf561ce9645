"""A fault-injecting HTTP backend for supervisor tests. A test tool, not a product backend.

    python -m tests.fault_backend --port P [--ready-after S] [--exit-after S --exit-code N]
        [--ignore-sigterm] [--grandchild] [--hold-pipes] [--hang-after S] [--spew BYTES]
        [--invalid-utf8] [--marker FILE]

It answers GET /health and GET /v1/models with 200 once "ready", using only the standard
library so it starts in milliseconds. `--marker FILE` appends "START <pid>" when it starts
and "STOP <pid>" when it gets SIGTERM, for tests that poll for lifecycle marks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.monotonic()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--model", default="fault")
    p.add_argument("--ready-after", type=float, default=0.0)
    p.add_argument("--exit-after", type=float, default=None)
    p.add_argument("--exit-code", type=int, default=1)
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--grandchild", action="store_true", help="fork a child that sleeps (same group)")
    p.add_argument("--escaped-grandchild", action="store_true", help="fork a child that calls setsid")
    p.add_argument("--hold-pipes", action="store_true", help="the grandchild keeps stdout/stderr open")
    p.add_argument("--hang-after", type=float, default=None, help="stop answering after S seconds")
    p.add_argument("--spew", type=int, default=0, help="write this many bytes of output at start")
    p.add_argument("--invalid-utf8", action="store_true")
    p.add_argument("--no-listen", action="store_true", help="never open the port")
    p.add_argument("--marker", default=None)
    p.add_argument("--die-while", default=None, help="exit at once (code 1) while this file exists")
    args = p.parse_args()

    def mark(text: str) -> None:
        if args.marker:
            with open(args.marker, "a") as fh:
                fh.write(f"{text} {os.getpid()} {time.time():.3f}\n")

    mark("START")
    if args.die_while and os.path.exists(args.die_while):
        print("dying on purpose", flush=True)
        sys.exit(1)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, lambda *_: mark("SIGTERM-IGNORED"))
    else:
        signal.signal(signal.SIGTERM, lambda *_: (mark("STOP"), os._exit(0)))
    if args.grandchild:
        _fork_grandchild(False, args.hold_pipes, args.marker)
    if args.escaped_grandchild:
        _fork_grandchild(True, args.hold_pipes, args.marker)
    print(f"fault backend pid {os.getpid()} on port {args.port}", flush=True)
    if args.invalid_utf8:
        sys.stdout.buffer.write(b"bad bytes: \xff\xfe\xc3( and a secret-free line\n")
        sys.stdout.flush()
    if args.spew:
        line = b"x" * 99 + b"\n"
        for _ in range(args.spew // 100):
            sys.stdout.buffer.write(line)
        sys.stdout.flush()
    if args.exit_after is not None:
        threading.Timer(args.exit_after, lambda: os._exit(args.exit_code)).start()
    if args.no_listen:
        while True:
            time.sleep(3600)
    _serve(args, mark)


def _fork_grandchild(escape: bool, hold_pipes: bool, marker: str | None) -> None:
    pid = os.fork()
    if pid:
        return
    if escape:
        os.setsid()
    if not hold_pipes:
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    if marker:
        with open(marker, "a") as fh:
            fh.write(f"GRANDCHILD {os.getpid()}\n")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(3600)


def _serve(args: argparse.Namespace, mark: Callable[[str], None]) -> None:
    served_ok = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            age = time.monotonic() - STARTED
            if args.hang_after is not None and age >= args.hang_after:
                time.sleep(3600)  # a hung backend: the connection is accepted, nothing comes back
            if age < args.ready_after:
                self._send(503, {"status": "loading"})
            elif self.path in ("/health", "/v1/models"):
                if not served_ok.is_set():
                    served_ok.set()
                    mark("ANSWERED")
                self._send(200, {"status": "ok", "data": [{"id": args.model}]})
            else:
                self._send(404, {"error": "not found"})

        def _send(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            return

    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
