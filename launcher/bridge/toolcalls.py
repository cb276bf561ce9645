"""Tool calls from an OpenAI-style stream: fragments grouped into calls, arguments checked before a client sees them.

OpenAI's grammar ties a call's fragments together by `index`, but servers differ: Ollama 0.20 sends every
parallel call with index 0 and tells them apart only by `id` (ollama/ollama#15457), others leave `index` out,
LiteLLM's interleaved calls carry neither, some give every call the same id, and Poolside's API gives one call a
new id partway through. The rules here, in order:
- a fragment with a function name starts a new call, unless it only repeats the name (and id) of the call it
  belongs to while that call's arguments are still incomplete (servers that send the name on every fragment);
- a fragment without a name continues a call: the one its index names, else the one whose id it carries, else
  the call in progress. A new id alone never starts a call.

Arguments are decided once, when the answer ends: valid JSON goes through as it came, JSON with an
unambiguous flaw (a missing closer, a trailing comma, Python literals) is repaired, and anything else becomes
`{}` with the raw text shown to the user beside the call. A client's incremental JSON parser (the SDK's
`messages.stream()`) therefore never sees text it cannot parse, and streamed and non-streamed answers agree.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from adapters.tool_parsers._json_repair import load_json
from adapters.tool_parsers._types import Malformed
from launcher.bridge.codec import DecodeError, dumps_str, loads

log = logging.getLogger("anyclaude.bridge")

# The Messages API accepts tool_use ids of these characters only; a backend's id (Kimi's `functions.Read:0`)
# would be refused when the client sends it back with the tool's result.
_VALID_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class PendingCall:
    """One tool call being received: what the backend said so far."""

    id: str = ""
    name: str = ""
    args: list[str] = field(default_factory=list)


class CallCollector:
    """Groups tool-call fragments into calls, in the order the calls began."""

    def __init__(self) -> None:
        self.calls: list[PendingCall] = []
        self._by_index: dict[int, PendingCall] = {}

    def __bool__(self) -> bool:
        return bool(self.calls)

    def feed(self, raw: dict[str, Any]) -> None:
        """Take one element of a delta's `tool_calls`."""
        index = raw.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else None
        call_id = raw.get("id") if isinstance(raw.get("id"), str) and raw.get("id") else None
        function: dict[str, Any] = raw["function"] if isinstance(raw.get("function"), dict) else {}
        name = function.get("name")
        name = name if isinstance(name, str) and name else None
        call = self._call_for(index, call_id)
        if call is None or (name is not None and call.name and not _repeats(call, call_id, name)):
            call = self._new(index)
        if call_id and not call.id:
            call.id = call_id
        if name is not None and not call.name:
            call.name = name
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            call.args.append(piece)
        elif isinstance(piece, dict):  # a few servers send the arguments as an object
            call.args.append(dumps_str(piece))

    def add_whole(self, call_id: str, name: str, arguments: str) -> None:
        """A complete call found elsewhere (tool-call markup a backend left in its text)."""
        self.calls.append(PendingCall(call_id, name, [arguments]))

    def _call_for(self, index: int | None, call_id: str | None) -> PendingCall | None:
        """The call a fragment continues unless its function name starts another; None: there is none yet."""
        if index is not None:
            return self._by_index.get(index)
        if call_id:
            for call in reversed(self.calls):
                if call.id == call_id:
                    return call
        return self.calls[-1] if self.calls else None

    def _new(self, index: int | None) -> PendingCall:
        call = PendingCall()
        self.calls.append(call)
        if index is not None:
            self._by_index[index] = call
        return call


def _repeats(call: PendingCall, call_id: str | None, name: str) -> bool:
    """Whether a fragment naming `name` goes on with `call` rather than starting another call: same name, no
    other id, and arguments not yet a whole JSON value (a second call's fragment comes after the first's end)."""
    if name != call.name or (call_id and call.id and call_id != call.id):
        return False
    text = "".join(call.args).strip()
    if not text:
        return True
    try:
        loads(text)
    except DecodeError:
        return True
    return False


@dataclass(frozen=True)
class FinalCall:
    """A call as the client gets it: `arguments` is always a JSON object's text; `note` is set when the
    backend's arguments were replaced, for the user to see."""

    id: str
    name: str
    arguments: str
    note: str | None = None


def finalize(calls: list[PendingCall]) -> list[FinalCall]:
    """The calls to send, with unique valid ids and arguments a client can parse; calls without a name are dropped."""
    seen: set[str] = set()
    out: list[FinalCall] = []
    for call in calls:
        if not call.name:
            log.warning("dropping a tool call without a name from the backend")
            continue
        call_id = call.id if _VALID_ID.match(call.id) and call.id not in seen else new_id("toolu")
        seen.add(call_id)
        arguments, note = _arguments(call.name, "".join(call.args))
        out.append(FinalCall(call_id, call.name, arguments, note))
    return out


def _arguments(name: str, raw: str) -> tuple[str, str | None]:
    text = raw.strip()
    if not text:
        return "{}", None
    try:
        if isinstance(loads(text), dict):
            return text, None
    except DecodeError:
        pass
    try:
        value = load_json(text)
    except Malformed:
        value = None
    if isinstance(value, dict):
        log.info("repaired the JSON arguments of a %s call (%d characters)", name, len(text))
        return dumps_str(value), None
    # The text itself is not logged: arguments may carry what the user's files hold.
    log.warning(
        "the backend's arguments for a %s call are not a JSON object (%d characters); sending {}", name, len(text)
    )
    note = (
        f"[anyclaude: the model's arguments for {name} were not valid JSON, so the call was sent with no "
        f"arguments. It wrote: {raw}]"
    )
    return "{}", note
