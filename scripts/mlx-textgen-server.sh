#!/usr/bin/env bash
# Start MLX-Textgen's OpenAI-compatible server: mlx-textgen-server.sh -m MODEL -p PORT [--host HOST] [more serve flags]
#
# The Python used is $ANYCLAUDE_PYTHON (the backend's pythonVenv), else python3 on PATH.
# MLX-Textgen sizes its caches from mx.metal.device_info()["max_recommended_working_set_size"];
# off Apple Silicon that call returns {} and every generation fails. On Linux the server is
# therefore run in-process after filling that key from the machine's total memory.
set -euo pipefail

PYTHON="${ANYCLAUDE_PYTHON:-python3}"

if [[ "$(uname -s)" != "Linux" ]]; then
    exec "$PYTHON" -m mlx_textgen.cli serve "$@"
fi

exec "$PYTHON" - serve "$@" <<'PY'
import os
import sys

import mlx.core as mx

_device_info = mx.metal.device_info
# The machine's memory from the C library, not psutil: MLX-Textgen's own venv need not have psutil.
_TOTAL_MEMORY = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_info():
    info = dict(_device_info())
    info.setdefault("max_recommended_working_set_size", _TOTAL_MEMORY)
    return info


mx.metal.device_info = device_info
sys.argv[0] = "mlx_textgen"

from mlx_textgen.cli import main  # noqa: E402  (after the patch, on purpose)

main()
PY
