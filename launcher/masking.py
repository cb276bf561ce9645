"""Secret values in a config: found, masked for copies, and put back from the file they live in.

A secret is the value of a key with a secret's name (`apiKey`, `OPENAI_API_KEY`, `HF_TOKEN`, ...) or
the argument after (or in) a secret-named flag of an argv list (`--api-key X`, `--token=X`). A
`${VAR}` reference is not a secret: it names where the secret is, and is kept as written.

Copies of the config (config history, `config show`) carry a mask instead. In history the mask names
the field (`«secret /backends/x/apiKey»`, a JSON pointer), so a rollback can take the value from the
current file, where the user keeps it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from launcher.redact import MASK, is_secret_name

Path = tuple[str | int, ...]
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
_TOKEN = re.compile(r"«secret (/[^»\"]*)»")
_ASSIGN = re.compile(r"^-{1,2}([\w-]+)=(.+)$")
_URL_PASSWORD = re.compile(r"(://[^/:@\s]+:)([^/@\s]+)(@)")


class RestoreError(ValueError):
    """A masked field whose value the current file does not have."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def secret_fields(value: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """(path, literal value) of every secret in a parsed config."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("//"):
                continue
            if isinstance(item, str) and is_secret_name(key) and _literal(item):
                yield (*path, key), item
            else:
                yield from secret_fields(item, (*path, key))
    elif isinstance(value, list):
        hide_next = False
        for index, item in enumerate(value):
            if not isinstance(item, str):
                yield from secret_fields(item, (*path, index))
                hide_next = False
                continue
            assigned = _ASSIGN.match(item)
            if (hide_next or (assigned and is_secret_name(assigned.group(1)))) and _literal(item):
                yield (*path, index), item
            hide_next = item.startswith("-") and "=" not in item and is_secret_name(item.lstrip("-"))


def _literal(value: str) -> bool:
    return bool(value) and not _REFERENCE.fullmatch(value) and not _TOKEN.fullmatch(value)


def pointer(path: Path) -> str:
    """The JSON pointer of `path` (RFC 6901)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def dotted(pointer_text: str) -> str:
    """`/backends/x/apiKey` -> `backends.x.apiKey`, as config errors name fields."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer_text.split("/")[1:]]
    return ".".join(f"[{p}]" if p.isdigit() else p for p in parts).replace(".[", "[")


def token(path: Path) -> str:
    return f"«secret {pointer(path)}»"


def mask_text(text: str) -> str:
    """The config text with each secret replaced by a token naming its field; everything else as written.

    The replacement is textual (comments, order and layout survive); when a secret is written in a form
    the text replacement cannot find (escapes), the parsed config is written out instead, masked.
    """
    data = json.loads(text)
    fields = list(secret_fields(data))
    if not fields:
        return text
    masked = text
    for path, value in fields:
        masked = masked.replace(json.dumps(value, ensure_ascii=False), json.dumps(token(path), ensure_ascii=False))
    secrets = {value for _, value in fields}
    if not any(secret in string for string in _strings(json.loads(masked)) for secret in secrets):
        return masked
    for path, _ in fields:
        _set(data, path, token(path))
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def has_secrets(text: str) -> bool:
    try:
        return any(True for _ in secret_fields(json.loads(text)))
    except ValueError:
        return False


def unmask_text(masked: str, current_text: str) -> str:
    """`masked` with each token replaced by the value at the same field of the current config.

    Raises:
        RestoreError: the current config has no usable value at a masked field (its dotted name).
        ValueError: the current config is not JSON.
    """
    pointers = sorted(set(_TOKEN.findall(masked)))
    if not pointers:
        return masked
    current = json.loads(current_text)
    text = masked
    for found in pointers:
        value = _get(current, found)
        if not isinstance(value, str) or not value or _TOKEN.fullmatch(value):
            raise RestoreError(dotted(found))
        text = text.replace(json.dumps(f"«secret {found}»", ensure_ascii=False), json.dumps(value, ensure_ascii=False))
    return text


def masked_view(value: Any, key: str = "") -> Any:
    """A parsed config safe to print: secrets (also ${VAR}-expanded ones) and URL passwords masked."""
    if isinstance(value, dict):
        return {k: masked_view(v, k) for k, v in value.items()}
    if isinstance(value, list):
        paths = {path[0] for path, _ in secret_fields(value)}
        return [MASK if i in paths else masked_view(v) for i, v in enumerate(value)]
    if isinstance(value, str):
        if is_secret_name(key) and value:
            return MASK
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", value)
    return value


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _get(value: Any, pointer_text: str) -> Any:
    for raw in pointer_text.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _set(value: Any, path: Path, new: str) -> None:
    for part in path[:-1]:
        value = value[part]
    value[path[-1]] = new
