"""Tool descriptions cut to their first sentence for a small model."""

from __future__ import annotations

from launcher.bridge.request import short_description, short_tool_descriptions

BASH = {
    "type": "function",
    "function": {
        "name": "Bash",
        "description": "Executes a given bash command and returns its output.\n\nThe working directory persists "
        "between commands. IMPORTANT: avoid using this tool to run find, grep, cat.",
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command to execute"},
                "timeout": {"type": "number", "description": "Optional timeout in milliseconds (max 600000). More."},
                "env": {"type": "array", "items": {"type": "object", "description": "One pair. Key and value."}},
            },
            "required": ["command"],
        },
    },
}


def test_descriptions_keep_their_first_sentence_and_the_schema_stays() -> None:
    (short,) = short_tool_descriptions([BASH])

    assert short["function"]["description"] == "Executes a given bash command and returns its output."
    properties = short["function"]["parameters"]["properties"]
    assert properties["timeout"]["description"] == "Optional timeout in milliseconds (max 600000)."
    assert properties["command"] == {"type": "string", "description": "The command to execute"}
    assert properties["env"]["items"]["description"] == "One pair."
    assert short["function"]["parameters"]["required"] == ["command"]
    assert BASH["function"]["description"].startswith("Executes") and "IMPORTANT" in BASH["function"]["description"]


def test_a_long_first_sentence_is_cut_and_a_version_number_is_not_a_sentence_end() -> None:
    assert short_description("x" * 500) == "x" * 200
    assert short_description("Uses Python 3.11 for scripts. Then more.") == "Uses Python 3.11 for scripts."
