"""Doctor checks of the machine: Python, platform, MLX packages, OpenBLAS, server binaries, Claude Code.

Nothing here imports mlx: versions come from package metadata, binaries answer `--version`.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping

from adapters.base import Check, CheckStatus
from adapters.checks import binary_version, installed_version
from adapters.openblas import find_openblas, openblas_check

CLAUDE_VERSION = "2.1.197"
CLAUDE_INSTALL = f"npm install -g @anthropic-ai/claude-code@{CLAUDE_VERSION}"
CLAUDE_TIMEOUT_S = 5.0
_VERSION = re.compile(r"\d+(?:\.\d+)+")


def environment_checks(env: Mapping[str, str]) -> list[Check]:
    """Everything about this machine that does not depend on the config."""
    found = [python_check(), platform_check(sys.platform, platform.machine())]
    found += package_checks(sys.platform)
    blas = openblas_check("env")
    library = find_openblas()
    if blas is not None and blas.status is CheckStatus.OK and library:
        where = "the system's" if library.source == "system" else f"pip's {library.source}"
        detail = f"OpenBLAS ({where}, {library.library}): preloaded into MLX backends (prefill ~11x faster)"
        blas = Check(blas.name, blas.status, detail)
    if blas is not None:
        found.append(blas)
    found += [binary_info("mistralrs", ("mistralrs", "mistralrs-server"), env)]
    found += [binary_info("llama-server", ("llama-server",), env), claude_check(env)]
    return found


def python_check() -> Check:
    version = platform.python_version()
    return Check("env.python", CheckStatus.OK, f"Python {version} ({sys.executable})")


def platform_check(system: str, machine: str) -> Check:
    """Metal needs macOS on Apple Silicon; Linux runs MLX on the CPU, which works but is slow."""
    name = "env.platform"
    if system == "darwin":
        if machine == "arm64":
            return Check(name, CheckStatus.OK, "macOS on Apple Silicon: MLX uses Metal")
        return Check(
            name,
            CheckStatus.WARN,
            f"macOS on {machine}: MLX needs Apple Silicon",
            "Use a llama-cpp or remote backend on this Mac.",
        )
    if system.startswith("linux"):
        return Check(name, CheckStatus.OK, f"Linux {machine}: MLX runs on the CPU (Metal is macOS only)")
    return Check(
        name,
        CheckStatus.WARN,
        f"{system} {machine}: MLX is not supported here",
        "Use a llama-cpp or remote backend.",
    )


def package_checks(system: str) -> list[Check]:
    """mlx, mlx-lm (dependencies on macOS and Linux) and mlx-textgen (an optional extra)."""
    found: list[Check] = []
    wanted = [("mlx", "pip install mlx"), ("mlx-lm", "pip install mlx-lm")]
    if system.startswith("linux"):
        wanted[0] = ("mlx", "pip install 'mlx[cpu]'")
        wanted.insert(1, ("mlx-cpu", "pip install 'mlx[cpu]' (plain mlx has no backend on Linux)"))
    for dist, hint in wanted:
        version = installed_version(dist)
        if version is None:
            found.append(
                Check(f"env.{dist}", CheckStatus.WARN, f"{dist} is not installed (MLX backends need it)", hint)
            )
        else:
            found.append(Check(f"env.{dist}", CheckStatus.OK, f"{dist} {version}"))
    textgen = installed_version("mlx-textgen")
    from adapters.mlx_textgen import RECIPE

    # The one recipe (README, the backend's own checks): MLX-Textgen lives in a venv of its own.
    finding = f"mlx-textgen {textgen}" if textgen else f"mlx-textgen not installed here (optional: {RECIPE})"
    found.append(Check("env.mlx-textgen", CheckStatus.OK, finding))
    return found


def binary_info(label: str, names: tuple[str, ...], env: Mapping[str, str]) -> Check:
    """An optional server binary: where it is and its version; its absence only matters to its backends."""
    path = env.get("PATH")
    found = next((hit for hit in (shutil.which(n, path=path) for n in names) if hit), None)
    if found is None:
        return Check(f"env.{label}", CheckStatus.OK, f"{' / '.join(names)} not on PATH (only its backends need it)")
    return Check(f"env.{label}", CheckStatus.OK, f"{found} ({binary_version(found) or 'version unknown'})")


def claude_check(env: Mapping[str, str]) -> Check:
    """Claude Code on PATH and its version; anyclaude is tested with CLAUDE_VERSION."""
    name = "env.claude"
    found = shutil.which("claude", path=env.get("PATH"))
    if found is None:
        return Check(
            name, CheckStatus.WARN, "claude not found on PATH (`anyclaude serve` works without it)", CLAUDE_INSTALL
        )
    try:
        done = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=CLAUDE_TIMEOUT_S, env=dict(env)
        )
    except subprocess.TimeoutExpired:
        return Check(
            name, CheckStatus.WARN, f"{found} --version did not answer in {CLAUDE_TIMEOUT_S:.0f} s", CLAUDE_INSTALL
        )
    except OSError as exc:
        return Check(name, CheckStatus.WARN, f"{found} cannot be run ({exc.strerror})", CLAUDE_INSTALL)
    match = _VERSION.search(done.stdout or done.stderr or "")
    if done.returncode != 0 or match is None:
        return Check(name, CheckStatus.WARN, f"{found} --version gave no version", CLAUDE_INSTALL)
    if match.group() != CLAUDE_VERSION:
        return Check(
            name,
            CheckStatus.WARN,
            f"claude {match.group()} ({found}); anyclaude is tested with {CLAUDE_VERSION}",
            CLAUDE_INSTALL,
        )
    return Check(name, CheckStatus.OK, f"claude {match.group()} ({found})")
