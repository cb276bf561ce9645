#!/usr/bin/env python3
"""Thin entry for anyclaude's MLX server, for configs that name it as `serverScript`.

    python scripts/mlx-server.py --model ~/models/X --port 8081 [--host H] [--cpu-only]

Every option of `python -m adapters.mlx_server --help` is accepted.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import adapters.mlx_server  # noqa: F401  (an installed anyclaude)
except ImportError:
    # Run as a plain script from a checkout: the package sits next to this folder.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.mlx_server.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
