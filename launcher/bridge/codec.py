"""JSON encoding on the hot path: orjson when it is installed, the standard library otherwise.

Both produce compact UTF-8 JSON and keep key order, so a request translated twice is byte-identical
(a backend's prefix cache only hits when the prompt is).
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None  # type: ignore[assignment]


class DecodeError(ValueError):
    """The bytes are not JSON."""


if orjson is not None:

    def loads(data: bytes | str) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(str(exc)) from None

    def dumps(value: Any) -> bytes:
        # OPT_NON_STR_KEYS: a schema may carry integer keys after a client's own round trip.
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)

else:  # pragma: no cover - exercised only without orjson

    def loads(data: bytes | str) -> Any:
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DecodeError(str(exc)) from None

    def dumps(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def dumps_str(value: Any) -> str:
    """JSON text, for fields that carry JSON as a string (tool-call arguments)."""
    return dumps(value).decode()
