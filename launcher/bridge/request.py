"""Anthropic Messages request → OpenAI chat-completions request.

Choices a backend's chat template depends on:
- `system` blocks become one leading system message (billing line stripped, `cache_control` dropped).
- A `role: system` message before any turn joins the system prompt. One later in the conversation
  (Claude Code puts an agent list after the first user turn) keeps its position as user-role text
  wrapped in `<system-reminder>` and merged into the adjacent user turn, ahead of its text: most templates accept a
  system message only first, and moving it to the front would change the cached prefix every time
  it changes.
- `tool_result` blocks become `tool` messages right after the assistant message that called them;
  `is_error` results are prefixed with `[error] `.
- Consecutive messages of one role are merged: several templates require strict alternation.
- Tools and their schemas are passed through in the client's order, unsorted, unchanged, so the
  same tools give the same bytes on every request.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from typing import Any

from launcher.bridge.blocks import convert_assistant, convert_user, plain_text
from launcher.bridge.errors import invalid_request
from launcher.bridge.hygiene import strip_billing_header
from launcher.bridge.models import CountTokensRequest, Message, MessagesRequest, Tool

log = logging.getLogger("anyclaude.bridge")

ERROR_PREFIX = "[error] "


def system_text(system: Any, strip_billing: bool = True) -> str:
    """The system prompt as one string; non-text blocks are ignored."""
    if strip_billing:
        system = strip_billing_header(system)
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    return "\n\n".join(plain_text(system, "system"))


def translate_messages(req: CountTokensRequest, strip_billing: bool = True) -> list[dict[str, Any]]:
    """The OpenAI `messages` list for an Anthropic request, system prompt first."""
    system_parts = [text] if (text := system_text(req.system, strip_billing)) else []
    out: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []  # mid-conversation system text waiting for a user turn
    started = False
    for i, msg in enumerate(req.messages):
        if msg.role == "system":
            content = strip_billing_header(msg.content) if strip_billing else msg.content
            text = "\n\n".join(plain_text(content, f"messages.{i}.content"))
            if not started:
                system_parts.append(text)
            elif out and out[-1]["role"] == "user":
                # Before the turn's own text: when this turn is the last one, its question must stay the last
                # thing the model reads, or a small model answers the reminder (seen with SmolLM2).
                out[-1]["content"].insert(0, _reminder(text))
            else:
                pending.append(_reminder(text))
            continue
        started = True
        if msg.role == "user":
            _add_user(out, msg, i, pending)
            pending = []
        else:
            if pending:
                _append(out, {"role": "user", "content": pending})
                pending = []
            _add_assistant(out, msg, i)
    if pending:
        _append(out, {"role": "user", "content": pending})
    messages = [{"role": "system", "content": "\n\n".join(system_parts)}] if system_parts else []
    messages.extend(_finish(m) for m in out)
    return messages


def _reminder(text: str) -> dict[str, Any]:
    return {"type": "text", "text": f"<system-reminder>\n{text}\n</system-reminder>"}


def _add_user(out: list[dict[str, Any]], msg: Message, i: int, pending: list[dict[str, Any]]) -> None:
    results, parts = convert_user(msg.content, f"messages.{i}.content", ERROR_PREFIX)
    for result in results:
        out.append(result)  # tool messages never merge: each answers one call
    parts = pending + parts
    if parts:
        _append(out, {"role": "user", "content": parts})


def _add_assistant(out: list[dict[str, Any]], msg: Message, i: int) -> None:
    text, calls = convert_assistant(msg.content, f"messages.{i}.content")
    if not text and not calls:
        return  # a turn that held only thinking: an empty turn confuses templates
    entry: dict[str, Any] = {"role": "assistant", "content": [{"type": "text", "text": text}] if text else []}
    if calls:
        entry["tool_calls"] = calls
    _append(out, entry)


def _append(out: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    last = out[-1] if out else None
    if last is not None and last["role"] == entry["role"] and entry["role"] in ("user", "assistant"):
        last["content"].extend(entry["content"])
        if "tool_calls" in entry:
            last.setdefault("tool_calls", []).extend(entry["tool_calls"])
        return
    out.append(entry)


def _finish(entry: dict[str, Any]) -> dict[str, Any]:
    """Text-only content as one string: several backends accept nothing else without a vision model."""
    if entry["role"] == "tool":
        return entry
    parts = entry["content"]
    if all(p["type"] == "text" for p in parts):
        joiner = "" if entry["role"] == "assistant" else "\n\n"
        entry["content"] = joiner.join(p["text"] for p in parts)
    return entry


def translate_tools(tools: list[Tool] | None) -> list[dict[str, Any]]:
    """OpenAI function tools, in the client's order; Anthropic server tools are dropped."""
    out: list[dict[str, Any]] = []
    for tool in tools or ():
        if tool.type not in (None, "custom"):
            log.debug("dropping server tool %s (%s): a local backend cannot run it", tool.name, tool.type)
            continue
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        function["parameters"] = tool.input_schema if tool.input_schema is not None else {"type": "object"}
        out.append({"type": "function", "function": function})
    return out


_FIRST_SENTENCE = re.compile(r"(.+?[.!?])(?=\s|$)", re.S)
# A first sentence is what a tool or parameter is; past this it is usage rules a small model cannot hold.
_SHORT_DESCRIPTION = 200


def short_description(text: str) -> str:
    """The first sentence of a description, at most 200 characters."""
    stripped = text.strip()
    found = _FIRST_SENTENCE.match(stripped)
    return (found.group(1) if found else stripped)[:_SHORT_DESCRIPTION]


def short_tool_descriptions(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tools shaped for a small model: every description (the tool's and its parameters') cut to its
    first sentence, and only the required parameters offered.

    Claude Code's Read, Edit and Bash descriptions are ~1,500 tokens of usage rules; their first sentences
    (~60 tokens) say what each does, and Claude Code enforces the rules itself (an Edit of a file not read
    first is refused with a reason the model can act on). Optional parameters go: without the rules that say
    when to use them, Qwen2.5-Coder-1.5B paged through a three-line file with Read's `offset` and `limit`, one
    line a call. A tool with no required parameter keeps them all."""

    def shorten(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: short_description(v) if k == "description" and isinstance(v, str) else shorten(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [shorten(v) for v in value]
        return value

    def required_only(tool: dict[str, Any]) -> dict[str, Any]:
        function = tool.get("function") or {}
        params = function.get("parameters")
        if not isinstance(params, dict) or not isinstance(params.get("properties"), dict):
            return tool
        required = [name for name in params.get("required") or [] if name in params["properties"]]
        if not required:
            return tool
        kept = {**params, "properties": {name: params["properties"][name] for name in required}}
        return {**tool, "function": {**function, "parameters": kept}}

    return [required_only(shorten(tool)) for tool in tools]


# After each tool result, for a small model. Measured on Qwen2.5-Coder-1.5B with Read, Edit and Bash offered:
# without it the model calls another tool after every result (an Edit of a file it was only asked about, or
# the same Read again: 0 of 3 questions answered); with it, it answers the questions and still makes the Edit a
# fix needs (3 of 3). Added to every result, not only the last, so earlier turns stay as the cache holds them.
TOOL_RESULT_HINT = (
    "\n\n(If this answers the user, reply to the user now in plain text. "
    "Call another tool only if the task still needs one.)"
)


# After a call the model already made (same tool, same arguments, same result) since the person last spoke.
# Measured on Qwen2.5-Coder-1.5B: after a fix and a test run that printed "ok" it read the test, ran it again,
# read it again … until Claude Code's turn limit (in the interactive UI, until the person stops it), or made the
# same refused Edit four times. Replaying those conversations to it: with the usual hint it went on in both; told
# that the call repeats one (and "else call a different tool") it switched tools; told to stop and report, it
# answered in both. In real runs it still goes on at times (an Edit refused again and again), so it is a help,
# not a guarantee; Claude Code's own turn limit is the backstop.
REPEATED_CALL_HINT = (
    "\n\n(This call repeats one you already made, with the same result. Stop calling tools now and reply to the "
    "user in plain text: say what you did and what the results showed.)"
)


def for_small_model(prepared: Prepared) -> Prepared:
    """The translation shaped for a small model: short tool descriptions, and a hint after each tool result (a
    firmer one after a call that repeats an earlier call of the same turn and got the same result)."""
    messages: list[dict[str, Any]] = []
    made: set[tuple[str, str]] = set()  # (call, result) since the person's last message; call: "name\0arguments"
    calls: dict[Any, str] = {}  # tool_call_id -> call
    for m in prepared.messages:
        role = m.get("role")
        if role == "user" and _has_text(m):
            made.clear()
        for call in m.get("tool_calls") or () if role == "assistant" else ():
            function = call.get("function") or {}
            calls[call.get("id")] = f"{function.get('name')}\0{_canonical(function.get('arguments'))}"
        if role == "tool" and isinstance(m.get("content"), str):
            seen = (calls.get(m.get("tool_call_id"), ""), m["content"])
            hint = REPEATED_CALL_HINT if seen in made else TOOL_RESULT_HINT
            made.add(seen)
            m = {**m, "content": m["content"] + hint}
        messages.append(m)
    return replace(prepared, messages=messages, tools=short_tool_descriptions(prepared.tools))


def _has_text(message: dict[str, Any]) -> bool:
    """Whether a user message says something (not only Claude Code's reminders)."""
    content = message.get("content")
    parts = (
        [content]
        if isinstance(content, str)
        else [p.get("text", "") for p in content or () if isinstance(p, dict) and p.get("type") == "text"]
    )
    return any(_REMINDER.sub("", part).strip() for part in parts)


_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)


def _canonical(arguments: Any) -> str:
    """Tool-call arguments compared by value (key order and spacing aside)."""
    if not isinstance(arguments, str):
        return json.dumps(arguments, sort_keys=True)
    try:
        return json.dumps(json.loads(arguments), sort_keys=True)
    except ValueError:
        return arguments


def translate_tool_choice(choice: dict[str, Any] | None) -> tuple[Any, bool]:
    """(OpenAI tool_choice or None, parallel tool calls disabled)."""
    if choice is None:
        return None, False
    kind = choice.get("type")
    no_parallel = choice.get("disable_parallel_tool_use") is True
    if kind == "auto":
        return "auto", no_parallel
    if kind == "any":
        return "required", no_parallel
    if kind == "none":
        return "none", False
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            raise invalid_request("tool_choice.name: a tool name is required when tool_choice.type is 'tool'")
        return {"type": "function", "function": {"name": name}}, no_parallel
    raise invalid_request(f"tool_choice.type: unknown value {kind!r} (auto, any, tool, none)")


def has_images(messages: list[dict[str, Any]]) -> bool:
    """Whether translated messages carry an image part."""
    return any(
        isinstance(part, dict) and part.get("type") == "image_url"
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
    )


@dataclass(frozen=True)
class Prepared:
    """The model-independent part of a translation, done before a backend is chosen."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    tool_choice: Any
    no_parallel: bool


def prepare(req: CountTokensRequest, strip_billing: bool = True) -> Prepared:
    """Translate messages, tools and tool_choice. Raises ApiError (400) for structurally wrong blocks."""
    tools = translate_tools(req.tools)
    choice, no_parallel = translate_tool_choice(req.tool_choice) if tools else (None, False)
    return Prepared(translate_messages(req, strip_billing), tools, choice, no_parallel)


def build_body(req: MessagesRequest, prepared: Prepared, model: str | None, max_tokens: int) -> dict[str, Any]:
    """The OpenAI chat-completions body, always streaming with usage.

    `thinking`, `output_config`, `context_management` and `metadata` are dropped: no OpenAI-style
    backend shares their meaning, and refusing them would break every Claude Code request.
    """
    body: dict[str, Any] = {}
    if model is not None:
        body["model"] = model
    body["messages"] = prepared.messages
    if prepared.tools:
        body["tools"] = prepared.tools
        if prepared.tool_choice is not None:
            body["tool_choice"] = prepared.tool_choice
        if prepared.no_parallel:
            body["parallel_tool_calls"] = False
    body["max_tokens"] = max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None:
        body["top_k"] = req.top_k
    if req.stop_sequences:
        body["stop"] = req.stop_sequences
    # Always stream from the backend: some fail non-streaming requests (MLX-Textgen on Linux), and a
    # non-stream answer is assembled from the stream anyway.
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


def translate_request(
    req: MessagesRequest, model: str | None, max_tokens: int | None = None, strip_billing: bool = True
) -> dict[str, Any]:
    """The whole OpenAI body for `req` in one step (max_tokens defaults to the request's)."""
    return build_body(req, prepare(req, strip_billing), model, max_tokens or req.max_tokens)
