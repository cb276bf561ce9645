"""Run a benchmark with the system OpenBLAS preloaded, as anyclaude's MLX backends are (Linux).

A process cannot preload a library into itself, so a bench that measures MLX in its own process
re-executes itself once with LD_PRELOAD set; both sides of a comparison then use the same BLAS.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.openblas import openblas_env


def ensure_openblas() -> None:
    """Re-execute this script with OpenBLAS in LD_PRELOAD, unless it is there already or not installed."""
    current = os.environ.get("LD_PRELOAD", "")
    env = openblas_env(current, ld_library_path=os.environ.get("LD_LIBRARY_PATH", ""))
    if env.get("LD_PRELOAD", current) != current:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})
