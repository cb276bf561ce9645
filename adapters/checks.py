"""Doctor checks shared by the backend kinds: model files, memory, ports, binaries, packages.

Each helper looks, never changes anything, and returns in well under a second, so that
`anyclaude doctor` answers within its five-second budget however many backends a config has.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psutil

from adapters.base import Check, CheckStatus

DEFAULT_HF_CACHE = Path("~/.cache/huggingface/hub")
# Past this share of the available memory a model is likely to push the machine into swap.
MEMORY_WARN_RATIO = 0.8
VERSION_TIMEOUT_S = 2.0
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hf_cache_dir(hf_cache: Path | None = None) -> Path:
    return (hf_cache or DEFAULT_HF_CACHE).expanduser()


def model_path_check(kind: str, path: str | None, *, hf_cache: Path | None = None) -> Check:
    """A model folder (config.json + *.safetensors), a .gguf file, or a HF id in the local cache."""
    name = f"{kind}.model"
    if not path:
        fix = 'Set the backend\'s "model" to a folder or file.'
        return Check(name, CheckStatus.FAIL, "no model is set", fix, key="model")
    local = Path(path).expanduser()
    if local.is_file():
        if local.suffix.lower() == ".gguf":
            return Check(name, CheckStatus.OK, f"GGUF file {local} ({_gib(local.stat().st_size)})")
        fix = "Point to a model folder or a .gguf."
        return Check(name, CheckStatus.FAIL, f"{local} is a file but not a .gguf", fix, key="model")
    if local.is_dir():
        missing = [pattern for pattern in ("config.json", "*.safetensors") if not any(local.glob(pattern))]
        if missing:
            return Check(
                name,
                CheckStatus.FAIL,
                f"{local} has no {' and no '.join(missing)}",
                "Point to a converted model folder (mlx_lm.convert writes one) or a .gguf file.",
                key="model",
            )
        return Check(name, CheckStatus.OK, f"model folder {local} ({_gib(_size_on_disk(local))})")
    if _HF_ID.match(path) and not path.startswith((".", "~")):
        snapshots = hf_cache_dir(hf_cache) / f"models--{path.replace('/', '--')}" / "snapshots"
        if snapshots.is_dir() and any(snapshots.iterdir()):
            return Check(name, CheckStatus.OK, f"{path} is in the local Hugging Face cache")
        return Check(
            name,
            CheckStatus.FAIL,
            f"{path} is not in the local Hugging Face cache ({hf_cache_dir(hf_cache)})",
            f"Download it first (hf download {path}) or give a local path.",
        )
    if path.startswith((".", "~", "/")) or local.is_absolute():
        # A local path that is not there: no restart will make it appear.
        fix = "Point it at a model folder (config.json + *.safetensors) or a .gguf file."
        return Check(name, CheckStatus.FAIL, f"{local} does not exist", fix, key="model")
    return Check(name, CheckStatus.FAIL, f"{local} does not exist", 'Fix the backend\'s "model" path.')


def script_check(name: str, path: str | Path, what: str, fix: str) -> Check:
    """A wrapper or server script the backend runs must exist as a file (else it dies at once, with bash's words)."""
    local = Path(path).expanduser()
    if local.is_file():
        return Check(name, CheckStatus.OK, f"{what} {local}")
    return Check(name, CheckStatus.FAIL, f"{what} {local} does not exist", fix)


def interpreter_check(name: str, venv: str | None, python: str) -> Check | None:
    """The Python of `pythonVenv` must exist; None when no venv is set (anyclaude's own Python runs it)."""
    if not venv:
        return None
    if Path(python).is_file():
        return Check(name, CheckStatus.OK, f"Python of pythonVenv: {python}")
    return Check(
        name,
        CheckStatus.FAIL,
        f"pythonVenv {venv} has no bin/python",
        f"Create it (python -m venv {venv}) or fix the backend's pythonVenv.",
    )


def model_memory_check(path: str | None, *, available: int | None = None, name: str = "model.memory") -> Check:
    """Warn when the model's size on disk is more than 80% of the memory available now."""
    local = Path(path).expanduser() if path else None
    if local is None or not local.exists():
        return Check(name, CheckStatus.OK, "model size unknown (not a local path)")
    size = _size_on_disk(local)
    free = psutil.virtual_memory().available if available is None else available
    finding = f"model {_gib(size)}, memory available {_gib(free)}"
    if size > MEMORY_WARN_RATIO * free:
        return Check(name, CheckStatus.WARN, finding, "Close other programs or use a smaller (quantized) model.")
    return Check(name, CheckStatus.OK, finding)


def port_check(host: str, port: int | None, *, name: str = "port") -> Check:
    """Free, or held by whom (pid and command line when this user may see them)."""
    if port is None:
        return Check(name, CheckStatus.FAIL, "no port is set", 'Set the backend\'s "port".')
    from launcher.supervision.ports import port_holder

    try:
        held = port_holder(host, port)
    except OSError as exc:
        return Check(name, CheckStatus.FAIL, f"cannot check {host}:{port} ({exc})", 'Fix the backend\'s "host".')
    if held is not None:
        return Check(name, CheckStatus.FAIL, f"port {port} on {host} is in use by {held.describe()}", _PORT_FIX)
    return Check(name, CheckStatus.OK, f"port {port} on {host} is free")


_PORT_FIX = 'Stop that process, or set the backend\'s "port" to a free one.'


def find_binary(names: Sequence[str], binary: str | None = None) -> str | None:
    """The configured `binary` (a path or a name on PATH), else the first of `names` on PATH."""
    if binary:
        path = Path(binary).expanduser()
        return str(path) if path.is_file() else shutil.which(binary)
    return next((found for found in map(shutil.which, names) if found), None)


def binary_check(kind: str, names: Sequence[str], binary: str | None, *, install: str = "") -> Check:
    """The server executable: where it is and what `--version` says."""
    name = f"{kind}.binary"
    found = find_binary(names, binary)
    if found is None:
        tried = binary or " or ".join(names)
        return Check(name, CheckStatus.FAIL, f"{tried} not found", install or f'Install it or set "binary" for {kind}.')
    return Check(name, CheckStatus.OK, f"{found} ({binary_version(found) or 'version unknown'})")


def binary_version(path: str) -> str | None:
    """The first line `path --version` prints, or None when it fails or hangs."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else None


def installed_version(dist_name: str) -> str | None:
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_check(dist_name: str, hint: str) -> Check:
    """An installed Python distribution and its version; `hint` says how to install it."""
    name = f"{dist_name}.package"
    version = installed_version(dist_name)
    if version is None:
        return Check(name, CheckStatus.FAIL, f"{dist_name} is not installed", hint)
    return Check(name, CheckStatus.OK, f"{dist_name} {version}")


def version_tuple(version: str) -> tuple[int, ...]:
    """'0.30.7' -> (0, 30, 7); '0.31.0rc1' -> (0, 31, 0): the numeric release part only."""
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**28 else f"{size / 2**20:.1f} MiB"
