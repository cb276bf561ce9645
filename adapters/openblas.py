"""Preloading OpenBLAS into MLX backends on Linux: the system's, else the one pip installed with anyclaude.

The `mlx[cpu]` wheel links a reference BLAS. With OpenBLAS preloaded, dense float32 matmul is ~30x faster
and a long prefill ~11x faster on the same CPU, so the MLX kinds merge `openblas_env()` into the
environment of the server they start. macOS uses Accelerate: nothing to do.

Where it comes from, in order: a system OpenBLAS (Debian's `libopenblas0-pthread`), else the
`cmeel-openblas` wheel, a dependency of anyclaude on Linux, so the one install command brings it. That
wheel's library needs `libgfortran.so.5`, which a machine without a system Fortran runtime lacks; the
`mlx[cpu]` wheel bundles one under a mangled name (`mlx_cpu.libs/libgfortran-<hash>.so.5.*`), so a private
folder of links gives it the name the loader looks for (`LD_LIBRARY_PATH`). Measured here, sgemm
512x576x1536: reference 4.3 GFLOP/s, the wheel's OpenBLAS 95-147, Debian's 123-141.
"""

from __future__ import annotations

import ctypes.util
import functools
import os
import platform as _platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from adapters.findings import Check, CheckStatus

INSTALL_HINT = "pip install cmeel-openblas (anyclaude's install brings it), or apt-get install libopenblas0-pthread"
WHEEL = "cmeel-openblas"
_GFORTRAN = "libgfortran.so.5"


@dataclass(frozen=True)
class Blas:
    """An OpenBLAS to preload: the library, where it came from, and a folder its dependencies need."""

    library: str
    source: str  # "system" or the wheel's name
    library_path: str | None = None


def _candidates(machine: str) -> tuple[Path, ...]:
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(machine.lower())
    if arch is None:
        return ()
    return (Path(f"/usr/lib/{arch}-linux-gnu/openblas-pthread/libopenblas.so.0"),)


@functools.cache
def find_openblas() -> Blas | None:
    """The system OpenBLAS (Debian's pthread build, else what the dynamic linker knows), else the wheel's.

    A bare soname (no slash) is fine in LD_PRELOAD: the linker searches its usual folders for it.
    """
    for candidate in _candidates(_platform.machine()):
        if candidate.is_file():
            return Blas(str(candidate), "system")
    system = ctypes.util.find_library("openblas")
    if system is not None:
        return Blas(system, "system")
    return wheel_openblas()


def wheel_openblas(
    links: Path | None = None, system_fortran: Callable[[], str | None] = lambda: ctypes.util.find_library("gfortran")
) -> Blas | None:
    """The `cmeel-openblas` wheel's library, with a folder that provides `libgfortran.so.5` when needed.

    Args:
        links: where to make the links to MLX's bundled Fortran runtime (default `$ANYCLAUDE_HOME/lib/blas`).
        system_fortran: the system's Fortran runtime, if any (injected by tests).
    """
    library = _wheel_file(WHEEL, "lib/libopenblas.so.0")
    if library is None:
        return None
    if system_fortran() is not None:
        return Blas(str(library), WHEEL)
    runtime = _wheel_file("mlx-cpu", "libgfortran-")
    if runtime is None:
        return None  # nothing to satisfy its dependency: preloading it would stop the backend from starting
    folder = links or _home() / "lib" / "blas"
    try:
        _link_runtime(runtime.parent, folder)
    except OSError:
        return None
    return Blas(str(library), WHEEL, str(folder))


def _wheel_file(distribution: str, contains: str) -> Path | None:
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if contains in str(file) and ".so" in file.name:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    return None


def _link_runtime(libs: Path, folder: Path) -> None:
    """Links in `folder`: `libgfortran.so.5` to MLX's bundled copy, and every library it needs by its own name.

    The bundled copy finds its own dependencies (libquadmath, under a mangled name) through `$ORIGIN`, which
    the loader takes from the link's folder, so those get links of their own names here too.
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for bundled in libs.iterdir():
        names = [bundled.name] + ([_GFORTRAN] if bundled.name.startswith("libgfortran-") else [])
        for name in names:
            link = folder / name
            if link.is_symlink() and os.readlink(link) == str(bundled):
                continue
            link.unlink(missing_ok=True)
            link.symlink_to(bundled)


def _home() -> Path:
    home = os.environ.get("ANYCLAUDE_HOME")
    return Path(home).expanduser() if home else Path.home() / ".anyclaude"


def openblas_env(
    ld_preload: str = "",
    platform: str = sys.platform,
    find: Callable[[], Blas | None] = find_openblas,
    ld_library_path: str = "",
) -> dict[str, str]:
    """`LD_PRELOAD` with OpenBLAS added to `ld_preload` (and `LD_LIBRARY_PATH` when it needs a folder); else {}.

    Args:
        ld_preload: an LD_PRELOAD the backend's own `env` already sets; kept, OpenBLAS goes after it.
        platform: `sys.platform` of the machine the backend runs on.
        find: where OpenBLAS is (injected by tests).
        ld_library_path: an LD_LIBRARY_PATH the backend's own `env` already sets; kept, after the folder.
    """
    if not platform.startswith("linux"):
        return {}
    blas = find()
    if blas is None:
        return {}
    entries = ld_preload.replace(":", " ").split()
    if blas.library not in entries:
        entries.append(blas.library)
    env = {"LD_PRELOAD": " ".join(entries)}
    if blas.library_path is not None:
        folders = [blas.library_path, *(p for p in ld_library_path.split(":") if p and p != blas.library_path)]
        env["LD_LIBRARY_PATH"] = ":".join(folders)
    return env


def openblas_check(
    kind: str, platform: str = sys.platform, find: Callable[[], Blas | None] = find_openblas
) -> Check | None:
    """On Linux, whether MLX backends will get OpenBLAS; None elsewhere (Metal and Accelerate need none)."""
    if not platform.startswith("linux"):
        return None
    blas = find()
    name = f"{kind}.openblas"
    if blas is None:
        return Check(name, CheckStatus.WARN, "no OpenBLAS: MLX on CPU uses its slow reference BLAS", INSTALL_HINT)
    where = "the system's" if blas.source == "system" else f"pip's {blas.source}"
    return Check(name, CheckStatus.OK, f"OpenBLAS ({where}, {blas.library}) preloaded into the backend")
