"""Keep secrets out of logs, state files and output: API keys, tokens, Authorization values."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MASK = "***"
_ASSIGN = re.compile(r"^(--?)?([\w-]+)=(.+)$")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[\w.~+/=-]+")
_SECRET_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|AUTHORIZATION)$", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True for names like OPENAI_API_KEY, HF_TOKEN, apiKey, Authorization, x-api-key."""
    return bool(_SECRET_NAME.search(name.replace("-", "_")))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace every known secret value and any `Bearer <token>` in `text`."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _BEARER.sub(rf"\1 {MASK}", text)


def redact_argv(argv: Sequence[str], secrets: Iterable[str] = ()) -> list[str]:
    """A copy of `argv` safe to log: values of `--api-key X`, `--token=X`, `API_KEY=X` and known secrets masked."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        match = _ASSIGN.match(arg)
        if match and is_secret_name(match.group(2)):
            out.append(f"{match.group(1) or ''}{match.group(2)}={MASK}")
            continue
        if arg.startswith("-") and is_secret_name(arg.lstrip("-")):
            hide_next = True
        out.append(redact_text(arg, secrets))
    return out
