"""How many bytes the request log grows by per 1,000 requests (bytes, not time: fine on a busy machine).

Starts a real `anyclaude serve` (scripted test backend, a throw-away `$ANYCLAUDE_HOME`), sends N
streamed requests with Claude Code's session and agent headers through the official anthropic SDK,
waits until the log holds them, then prints the file sizes. `--bodies` turns `logBodies` on, with a
~76 KB Claude Code-shaped request each time, to show what keeping prompts costs. `--max-bytes N` sets
requestLogMaxBytes and measures the files on disk (database, write-ahead log, -shm) every 5 ms during
the run: the largest they got, against the limit. Not a test.

    python bench/request_log_size.py [--requests 1000] [--bodies] [--max-bytes 262144]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import anthropic  # noqa: E402

from launcher.observe import store  # noqa: E402
from launcher.supervision.ports import free_port  # noqa: E402
from tests.harness import wait_until  # noqa: E402
from tests.scripted_backend import claude_code_body  # noqa: E402


def rows(db: Path) -> int:
    with store.reader(db) as conn:
        return store.count(conn) if conn is not None else 0


def newest(db: Path) -> int:
    with store.reader(db) as conn:
        return store.latest_id(conn) if conn is not None else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--bodies", action="store_true", help="logBodies on, with Claude Code-sized requests")
    parser.add_argument("--max-bytes", type=int, default=None, help="requestLogMaxBytes (at least 65536)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="anyclaude-logsize-") as tmp:
        home, proxy_port, backend_port = Path(tmp) / "home", free_port(), free_port()
        command = [sys.executable, "-m", "tests.scripted_backend", "--port", "{port}", "--script", "cached"]
        config = {
            "backend": "mlx",
            "port": proxy_port,
            "logBodies": args.bodies,
            **({"requestLogMaxBytes": args.max_bytes} if args.max_bytes else {}),
            "backends": {"mlx": {"command": command, "port": backend_port}},
        }
        (Path(tmp) / ".anyclauderc.json").write_text(json.dumps(config))
        env = {**os.environ, "ANYCLAUDE_HOME": str(home), "PYTHONPATH": str(ROOT)}
        serve = subprocess.Popen(
            [sys.executable, "-m", "launcher", "serve", "--config", str(Path(tmp) / ".anyclauderc.json")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        largest = [0]
        measuring = threading.Event()

        def measure() -> None:
            while not measuring.is_set():
                largest[0] = max(largest[0], store.disk_size(home / "requests.db"))
                time.sleep(0.005)

        sampler = threading.Thread(target=measure, daemon=True)
        sampler.start()
        try:
            client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{proxy_port}", api_key="local", max_retries=5)
            session = str(uuid.uuid4())
            body = claude_code_body() if args.bodies else None
            started = time.monotonic()
            for i in range(args.requests):
                headers = {"x-claude-code-session-id": session}
                if i % 4 == 3:  # every fourth request is a subagent's, as in a session that delegates
                    headers |= {"x-claude-code-agent-id": str(uuid.uuid4()), "x-claude-code-parent-agent-id": session}
                if body is not None:
                    kwargs = {k: body[k] for k in ("model", "max_tokens", "messages", "system", "tools")}
                    with client.messages.stream(**kwargs, extra_headers=headers) as stream:
                        stream.get_final_message()
                else:
                    with client.messages.stream(
                        model="claude-sonnet-4-5-20250929",
                        max_tokens=64,
                        messages=[{"role": "user", "content": f"turn {i}"}],
                        extra_headers=headers,
                    ) as stream:
                        stream.get_final_message()
            db = home / "requests.db"
            wait_until(lambda: newest(db) >= args.requests, 60, what="the log to hold every request")
            elapsed = time.monotonic() - started
            held = rows(db)
        finally:
            measuring.set()
            sampler.join()
            serve.terminate()
            serve.wait(30)
        sizes = {
            name: (home / name).stat().st_size for name in ("requests.db", "requests.db-wal") if (home / name).exists()
        }
    per_thousand = sizes["requests.db"] * 1000 / args.requests
    print(
        f"\nrequest log after {args.requests} requests ({elapsed:.0f} s), logBodies {'on' if args.bodies else 'off'}\n"
    )
    for name, size in sizes.items():
        print(f"  {name:<18} {size:>12,} bytes")
    if args.max_bytes:
        ratio = largest[0] / args.max_bytes
        print(f"  {'rows kept':<18} {held:>12,}")
        print(f"  {'largest on disk':<18} {largest[0]:>12,} bytes ({ratio:.2f}x requestLogMaxBytes {args.max_bytes:,})")
        return
    print(f"  {'per 1,000 requests':<18} {per_thousand:>12,.0f} bytes (the database; the WAL is reused, up to ~4 MB)")


if __name__ == "__main__":
    main()
