"""The process-wide settings of our MLX server, made in one step at its start (`configure_process`), not
wherever a module happens to need them.

- The GIL switch interval (engine.GIL_SWITCH_INTERVAL_S): the event loop waits at most that long for the GIL
  once the generation thread hands it a token. Set in the server's own process, and in the proxy's when the
  server is embedded there.
- Offline Hugging Face: in its own process the server sets HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE before
  anything imports huggingface_hub or transformers (they read them once). Embedded in the proxy's process the
  environment is left alone: every backend started later inherits it. The server reads local folders and the
  local cache only (`try_to_load_from_cache` never reaches the network), offline or not.
"""

from __future__ import annotations

import os
import sys


def configure_process(*, own_process: bool) -> None:
    """Set what our server needs of its process; `own_process` is False when embedded in the proxy's."""
    if own_process:  # first: importing the engine below imports mlx-lm, and with it transformers
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from adapters.mlx_server.engine import GIL_SWITCH_INTERVAL_S

    sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
