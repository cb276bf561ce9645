"""What the proxy and our MLX server agree on, named once: both sides import these.

- Claude Code's session and subagent ids travel from the client through the proxy to the server, which keeps
  each agent's prompt-cache slots apart by them.
- The server reports prompt reading in SSE comments, `: prefill {"prompt_tokens": N, "cached_tokens": C,
  "processed": P}`, before its first chunk and after each prefill chunk; clients ignore comments, the proxy
  reads the usage split from them and takes them as proof the backend is working.
- A request for no model or for any `claude-*` id (what Claude Code asks for) is served by the default model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

SESSION_HEADER = "x-claude-code-session-id"
AGENT_HEADER = "x-claude-code-agent-id"
PARENT_AGENT_HEADER = "x-claude-code-parent-agent-id"
SESSION_HEADERS = (SESSION_HEADER, AGENT_HEADER, PARENT_AGENT_HEADER)

PREFILL_COMMENT = "prefill "  # the text of the SSE comment, after ": "


def prefill_comment(figures: Mapping[str, int]) -> str:
    """The SSE comment line that reports prompt reading."""
    return f": {PREFILL_COMMENT}{json.dumps(dict(figures), separators=(',', ':'))}\n\n"


def is_default_model(requested: str | None) -> bool:
    """Whether a request's `model` means the backend's default model: none given, or a Claude id."""
    return not requested or requested.startswith("claude-")
