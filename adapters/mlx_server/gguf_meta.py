"""GGUF metadata values as Python scalars, with defaults and an actionable error for a missing required key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def meta_int(src: Path, meta: dict[str, Any], key: str, default: int | None = None) -> int:
    """Integer `key`, else `default`; raises ValueError naming `src` when it is missing and has no default."""
    value = meta.get(key)
    if value is None:
        if default is None:
            raise ValueError(
                f"{src.name} has no '{key}' metadata; re-export it with llama.cpp's convert_hf_to_gguf.py."
            )
        return default
    return int(value)


def meta_float(meta: dict[str, Any], key: str, default: float) -> float:
    """Float `key` as GGUF stores it (float32), else `default`."""
    value = meta.get(key)
    if value is None:
        return default
    # GGUF floats are float32: print them as float32 (1e-05), not as the nearest double (9.9999997e-06).
    return float(str(np.float32(value)))


def meta_bool(meta: dict[str, Any], key: str, default: bool) -> bool:
    """Boolean `key`, else `default`."""
    value = meta.get(key)
    return default if value is None else bool(value)
