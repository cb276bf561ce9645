"""What a person sees while a backend starts: a spinner on a terminal, plain lines elsewhere."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape


class Progress:
    """Shows start-up progress: elapsed time and the backend's last log line.

    While `muted` (Claude Code owns the terminal) it prints nothing at all: whatever it would have said
    is in the launcher's log already (state changes, config edits, disk trouble all log themselves).
    """

    def __init__(self, console: Console | None = None, interactive: bool | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.interactive = self.console.is_terminal if interactive is None else interactive
        self.muted = False
        self._status: Any = None
        self._started = 0.0
        self._title = ""

    @contextlib.contextmanager
    def silenced(self) -> Iterator[None]:
        """Print nothing until the block ends (another program draws on the terminal meanwhile)."""
        self.end()
        self.muted = True
        try:
            yield
        finally:
            self.muted = False

    def line(self, text: str, style: str = "") -> None:
        if self.muted:
            return
        if self.interactive:
            self.console.print(escape(text), style=style or None)
        else:
            print(text, file=sys.stderr, flush=True)

    def begin(self, title: str) -> None:
        if self.muted:
            return
        self._title = title
        self._started = time.monotonic()
        if self.interactive:
            self._status = self.console.status(escape(title), spinner="dots")
            self._status.start()
        else:
            self.line(f"{title} …")

    def tick(self, last_log_line: str) -> None:
        if self._status is None:
            return
        elapsed = time.monotonic() - self._started
        tail = f" [dim]{escape(last_log_line[-100:])}[/dim]" if last_log_line else ""
        self._status.update(f"{escape(self._title)} [bold]{elapsed:5.1f} s[/bold]{tail}")

    def end(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
