"""Preloading the system OpenBLAS into MLX backends on Linux.

The `mlx[cpu]` wheel links a reference BLAS. With OpenBLAS preloaded, dense float32 matmul is
~29x faster and a long prefill ~11x faster on the same CPU, so the MLX kinds merge
`openblas_env()` into the environment of the server they start. macOS uses Accelerate: nothing to do.
"""

from __future__ import annotations

import ctypes.util
import functools
import platform as _platform
import sys
from collections.abc import Callable
from pathlib import Path

from adapters.base import Check, CheckStatus

INSTALL_HINT = "apt-get install libopenblas0-pthread — prefill ~11x faster"


def _candidates(machine: str) -> tuple[Path, ...]:
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(machine.lower())
    if arch is None:
        return ()
    return (Path(f"/usr/lib/{arch}-linux-gnu/openblas-pthread/libopenblas.so.0"),)


@functools.cache
def find_openblas() -> str | None:
    """The system OpenBLAS: Debian's pthread build, else whatever the dynamic linker knows as openblas.

    A bare soname (no slash) is fine in LD_PRELOAD: the linker searches its usual folders for it.
    """
    for candidate in _candidates(_platform.machine()):
        if candidate.is_file():
            return str(candidate)
    return ctypes.util.find_library("openblas")


def openblas_env(
    ld_preload: str = "",
    platform: str = sys.platform,
    find: Callable[[], str | None] = find_openblas,
) -> dict[str, str]:
    """`{"LD_PRELOAD": ...}` with OpenBLAS added to `ld_preload`, on Linux when it is installed; else {}.

    Args:
        ld_preload: an LD_PRELOAD the backend's own `env` already sets; kept, OpenBLAS goes after it.
        platform: `sys.platform` of the machine the backend runs on.
        find: where OpenBLAS is (injected by tests).
    """
    if not platform.startswith("linux"):
        return {}
    library = find()
    if library is None:
        return {}
    entries = ld_preload.replace(":", " ").split()
    if library not in entries:
        entries.append(library)
    return {"LD_PRELOAD": " ".join(entries)}


def openblas_check(
    kind: str, platform: str = sys.platform, find: Callable[[], str | None] = find_openblas
) -> Check | None:
    """On Linux, whether MLX backends will get OpenBLAS; None elsewhere (Metal and Accelerate need none)."""
    if not platform.startswith("linux"):
        return None
    library = find()
    name = f"{kind}.openblas"
    if library is None:
        return Check(
            name, CheckStatus.WARN, "no system OpenBLAS: MLX on CPU uses its slow reference BLAS", INSTALL_HINT
        )
    return Check(name, CheckStatus.OK, f"OpenBLAS preloaded into the backend ({library})")
