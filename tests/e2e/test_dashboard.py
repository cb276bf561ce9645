"""The dashboard as a person uses it: Debian's Chromium, driven by Playwright, on a real `anyclaude serve`.

Requests sent with the official anthropic SDK appear on the open page without a reload; rolling back
from the page (after confirming) really puts the earlier config back and the running proxy applies it.
A screenshot is saved (to $ANYCLAUDE_SCREENSHOT_DIR when set, else the test's tmp folder) for a person
to look at; it is not committed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from launcher.supervision.ports import free_port
from tests.harness import Serve, launch_serve, wait_until

CHROMIUM = os.environ.get("ANYCLAUDE_CHROMIUM", "/usr/bin/chromium")
try:
    from playwright.sync_api import BrowserContext, Page, sync_playwright
except ImportError:  # the dev extra not installed
    sync_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e '.[dev]')"),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]
# Without these Chromium tries to reach update and sync services and stalls on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "dashboard-key-4242"


def scripted_entry(port: int, script: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "tests.scripted_backend", "--port", "{port}", "--script", script]
    return {"command": command, "port": port, "healthInterval": 200, "restartDelay": 100, "stopTimeout": 3000}


def write(path: Path, backend_port: int, proxy_port: int, script: str, **top: Any) -> str:
    text = json.dumps(
        {"backend": "local", "port": proxy_port, "backends": {"local": scripted_entry(backend_port, script)}, **top},
        indent=2,
    )
    path.write_text(text)
    return text


@pytest.fixture
def browser() -> Iterator[BrowserContext]:
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1250},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def started() -> Iterator[list[Serve]]:
    running: list[Serve] = []
    yield running
    for s in running:
        s.close()


def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("ANYCLAUDE_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    return path


def rows_shown(page: Page) -> int:
    return int(page.locator("#requests tbody tr").count())


def ask(s: Serve, text: str, **headers: str) -> str:
    """One streamed turn, as Claude Code sends them; the answer's text."""
    c = anthropic.Anthropic(base_url=s.proxy_url, api_key=KEY, max_retries=0, timeout=30)
    with c.messages.stream(
        model="claude-sonnet-4-6", max_tokens=32, messages=[{"role": "user", "content": text}], extra_headers=headers
    ) as stream:
        reply = stream.get_final_message()
    return "".join(b.text for b in reply.content if b.type == "text")


def test_requests_appear_live_and_rollback_from_the_page_rolls_back(
    tmp_path: Path, browser: BrowserContext, started: list[Serve]
) -> None:
    config = tmp_path / ".anyclauderc.json"
    backend_port, proxy_port = free_port(), free_port()
    first = write(config, backend_port, proxy_port, "text")
    s = launch_serve(config, "local", tmp_path / "marks", backend_port)
    started.append(s)
    s.wait_state("READY")
    assert ask(s, "hi") == "Hello world"

    # An edit the running anyclaude applies (a new backend on the same port): config history has two entries.
    second = write(config, backend_port, proxy_port, "reasoning")
    wait_until(lambda: len(list((s.home / "config-history").glob("*.json"))) == 2, 30, what="the applied edit")
    wait_until(lambda: _answer(s) == "Answer.", 30, what="the new backend to answer")

    page = browser.new_page()
    page.goto(f"{s.proxy_url}/ui")
    page.locator("#backends td.state-READY").wait_for(timeout=15_000)
    page.locator("#live.on").wait_for(timeout=15_000)
    before = rows_shown(page)

    # Requests sent now show up on the open page (live, no reload), with Claude Code's session id.
    for i in range(3):
        assert ask(s, f"turn {i} [script:cached]", **{"x-claude-code-session-id": "sess-dash-01"}) == "ok"
    wait_until(lambda: rows_shown(page) >= before + 3, 15, interval=0.2, what="three new rows on the page")
    newest = page.locator("#requests tbody tr").first
    assert "sess-das" in newest.inner_text() and "end_turn" in newest.inner_text()
    assert page.locator("#chart-ttft circle").count() >= 3, "the TTFT chart plots the requests"
    page.locator("#doctor td.check-ok").first.wait_for(timeout=30_000)
    # The backend's log tail shows the supervisor's lines about the swap.
    wait_until(lambda: "--script reasoning" in page.locator("#log").inner_text(), 10, what="the log tail")
    # The usage figures follow the new requests too.
    shown = rows_shown(page)
    wait_until(lambda: page.locator("#usage .figure b").first.inner_text() == str(shown), 10, what="usage figures")
    shot = screenshot(page, tmp_path, "dashboard.png")
    assert shot.stat().st_size > 10_000

    # Rolling back asks first; saying no changes nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("#history button[data-index='1']").click()
    assert config.read_text() == second

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#history button[data-index='1']").click()
    wait_until(lambda: config.read_text() == first, 10, what="the earlier config written back")
    wait_until(lambda: _answer(s) == "Hello world", 30, interval=0.2, what="the rolled-back backend to answer")
    page.locator("#rollback-result").filter(has_text="Wrote config #1").wait_for(timeout=5_000)


def _answer(s: Serve) -> str | None:
    try:
        return ask(s, "again")
    except anthropic.APIError:
        return None  # the swap is under way


def test_a_proxy_with_an_api_key_asks_for_it_on_the_page(
    tmp_path: Path, browser: BrowserContext, started: list[Serve]
) -> None:
    config = tmp_path / ".anyclauderc.json"
    backend_port, proxy_port = free_port(), free_port()
    write(config, backend_port, proxy_port, "text", apiKey=KEY)
    s = launch_serve(config, "local", tmp_path / "marks", backend_port)
    started.append(s)
    s.wait_state("READY")
    ask(s, "hello")
    page = browser.new_page()
    page.goto(f"{s.proxy_url}/ui")
    page.locator("#keyform").wait_for(state="visible", timeout=15_000)
    assert rows_shown(page) == 0, "no data without the key"
    page.fill("#key", KEY)
    page.click("#keyform button")
    page.locator("#backends td.state-READY").wait_for(timeout=15_000)
    wait_until(lambda: rows_shown(page) >= 1, 15, interval=0.2, what="the logged request")
