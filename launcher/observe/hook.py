"""The proxy's side of the request log: three calls per request, and a do-nothing default.

The handlers call `begin` when a request arrives, `routed` once a backend is chosen, and `end` with
the response they built; the observer takes it from there. A response whose text is searched for
tool calls also reports what was found (`text_tool_calls`) before its last byte is sent. Importing
this module costs nothing (no bridge, no sqlite), so the handlers can depend on it without a cycle.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response


class Observer(Protocol):
    def begin(self, request: Request, endpoint: str) -> Any:
        """Start the record of `request` (kept in its scope); returns it, or None when nothing is kept."""
        ...

    def routed(self, request: Request, backend: str, asked: str, served: str | None, stream: bool) -> None:
        """The backend chosen for `request`, the model asked for and sent on, whether the client streams."""
        ...

    def text_tool_calls(self, request: Request, recovered: int, failed: bool) -> None:
        """Tool calls the model wrote as text: how many became calls, and whether text looked like a failed one."""
        ...

    def end(self, record: Any, request: Request, response: Response) -> Response:
        """The response to send; the record is finished when its last byte is sent (or the client left)."""
        ...


class NoObserver:
    """Keeps nothing: what the proxy uses when no request log is wanted (tests, `doctor --deep`)."""

    def begin(self, request: Request, endpoint: str) -> None:
        return None

    def routed(self, request: Request, backend: str, asked: str, served: str | None, stream: bool) -> None:
        return None

    def text_tool_calls(self, request: Request, recovered: int, failed: bool) -> None:
        return None

    def end(self, record: Any, request: Request, response: Response) -> Response:
        return response


NO_OBSERVER = NoObserver()
