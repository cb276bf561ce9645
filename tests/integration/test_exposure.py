"""Exposure is loud (docs/reliability.md 19): a proxy or a backend bound beyond loopback is warned about at start,
on the terminal and in the log, naming the address and the risk."""

from __future__ import annotations

import os
from pathlib import Path

from tests.harness import start_serve, wait_until


def test_binding_beyond_loopback_is_warned_about(tmp_path: Path) -> None:
    s = start_serve(tmp_path, entry={"host": "0.0.0.0"}, top={"host": "0.0.0.0", "apiKey": "proxy-key-123456"})
    try:
        wait_until(lambda: "Serving the Anthropic API" in s.text(), 30, what="serve to start")
        out = s.text()
        assert f"The proxy listens on 0.0.0.0:{s.proxy_port}, beyond this machine" in out, out
        assert "backends.fault.host is 0.0.0.0" in out and "cannot make it ask for a key" in out, out
        log = (Path(os.environ["ANYCLAUDE_HOME"]) / "logs" / "anyclaude.log").read_text()
        assert "beyond this machine" in log and "backends.fault.host is 0.0.0.0" in log
        assert "proxy-key-123456" not in out + log
    finally:
        s.close()


def test_loopback_binding_says_nothing_about_exposure(tmp_path: Path) -> None:
    s = start_serve(tmp_path)
    try:
        wait_until(lambda: "Serving the Anthropic API" in s.text(), 30, what="serve to start")
        assert "beyond this machine" not in s.text()
    finally:
        s.close()
