"""How `.anyclauderc.json` is explained to people and editors: validation errors that name the field
and suggest the nearest key, and the JSON Schema of the file.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ValidationError

from launcher.errors import ConfigError
from launcher.redact import is_secret_name


def _known_keys(model: type[BaseModel]) -> list[str]:
    keys: list[str] = []
    for name, info in model.model_fields.items():
        if isinstance(info.validation_alias, AliasChoices):
            keys.extend(str(choice) for choice in info.validation_alias.choices)
        elif info.alias:
            keys.append(info.alias)
        else:
            keys.append(name)
    return keys


def did_you_mean(word: str, candidates: Any) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _json_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def config_error(
    path: Path, exc: ValidationError, config_model: type[BaseModel], backend_model: type[BaseModel]
) -> ConfigError:
    """One ConfigError naming the file and the JSON path of every problem pydantic found (in the file's
    model `config_model`, whose `backends` entries are `backend_model`)."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        where = _json_path(loc)
        if err["type"] == "extra_forbidden":
            model = backend_model if len(loc) == 3 and loc[0] == "backends" else config_model
            msg = f"unknown key{did_you_mean(str(loc[-1]), _known_keys(model))}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] not in {"port", "millis"} and "input" in err:
                shown = err["input"]
                if not isinstance(shown, dict | list) and not any(is_secret_name(str(part)) for part in loc):
                    msg = f"{shown!r}: {msg}"
        lines.append(f"{path}: {where}: {msg}")
    first, *rest = lines
    message = first if not rest else first + "".join(f"\n  {line}" for line in rest)
    return ConfigError(message, hint="Fix the field named above; `anyclaude config schema` lists every key.")


def config_json_schema(config_model: type[BaseModel]) -> dict[str, Any]:
    """JSON Schema of the file (`config_model`), for editors. `//` comment keys are allowed at every level."""
    schema = config_model.model_json_schema(by_alias=True)

    def allow_comments(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "additionalProperties" in node:
                # Comment keys are allowed in closed objects and in maps (`backends`, `env`) alike.
                node["patternProperties"] = {"^//": {}}
            for child in node.values():
                allow_comments(child)
        elif isinstance(node, list):
            for child in node:
                allow_comments(child)

    allow_comments(schema)
    entry = schema["$defs"]["BackendConfig"]["properties"]
    entry["modelPath"] = {**entry["model"], "description": "Same as model (the name earlier versions used)."}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "anyclaude config (.anyclauderc.json)"
    return schema
