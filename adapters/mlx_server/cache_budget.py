"""How much RAM and disk the prompt cache may take when the config does not say: sized from the machine.

RAM: what is left of the machine's memory once the default model's weights and a margin are taken out. The margin
(a quarter of the memory, at least 4 GiB) is for the operating system, the other programs of a working day and
MLX's own buffers (activations, its buffer cache): on a 16 GB Mac with a 4.5 GB model that leaves 7.5 GB of
keys and values (a 30B model's 40k-token conversation is ~4 GB), on a 64 GB one with a 17 GB model 31 GB. A
fixed 4 GiB was too much for the first and too little for the second. Never under `MIN_RAM_BYTES`: a budget of
nothing would make every turn a full prefill, which is worse than a little swapping.

Disk: a tenth of the space free in the cache folder at start, so a working day of evicted sessions stays on the
SSD without filling it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from adapters.mlx_server.config import ServerConfig

_GIB = 1 << 30
MARGIN_SHARE = 0.25
MIN_MARGIN_BYTES = 4 * _GIB
MIN_RAM_BYTES = 256 << 20
DISK_SHARE = 0.10


@dataclass(frozen=True)
class RamBudget:
    bytes: int
    machine: int
    weights: int
    margin: int
    configured: bool

    def describe(self) -> str:
        if self.configured:
            return f"RAM {gib(self.bytes)} (cacheBytes)"
        return (
            f"RAM {gib(self.bytes)} (machine {gib(self.machine)} - model weights {gib(self.weights)} "
            f"- margin {gib(self.margin)})"
        )


@dataclass(frozen=True)
class DiskBudget:
    bytes: int
    free: int
    configured: bool

    def describe(self) -> str:
        if self.configured:
            return f"disk {gib(self.bytes)} (cacheDiskBytes)"
        return f"disk {gib(self.bytes)} ({DISK_SHARE:.0%} of {gib(self.free)} free)"


def gib(count: int) -> str:
    return f"{count / _GIB:.1f} GiB"


def weights_bytes(model_dir: Path | None) -> int:
    """Bytes of a model folder's weight files (0 when it is not a local folder)."""
    if model_dir is None or not model_dir.is_dir():
        return 0
    return sum(path.stat().st_size for pattern in ("*.safetensors", "*.gguf") for path in model_dir.glob(pattern))


def machine_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def ram_budget(configured: int | None, *, machine: int, weights: int) -> RamBudget:
    """`configured` when set, else the machine's memory less the model's weights and a margin (see the module)."""
    margin = max(MIN_MARGIN_BYTES, int(machine * MARGIN_SHARE))
    if configured is not None:
        return RamBudget(configured, machine, weights, margin, configured=True)
    return RamBudget(max(MIN_RAM_BYTES, machine - weights - margin), machine, weights, margin, configured=False)


def disk_budget(configured: int | None, folder: Path | None) -> DiskBudget:
    """`configured` when set, else `DISK_SHARE` of the space free where `folder` is (or would be created)."""
    free = _free_bytes(folder)
    if configured is not None:
        return DiskBudget(configured, free, configured=True)
    return DiskBudget(int(free * DISK_SHARE), free, configured=False)


def _free_bytes(folder: Path | None) -> int:
    if folder is None:
        return 0
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the folder is made at the first save; its disk is the nearest parent's
    try:
        return int(shutil.disk_usage(existing).free)
    except OSError:
        return 0


def cache_budgets(config: ServerConfig, model_dir: Path | None) -> tuple[RamBudget, DiskBudget]:
    """The prompt cache's RAM and disk budgets for a server whose default model is in `model_dir`.

    No disk tier without a cache folder (nothing is saved then).
    """
    ram = ram_budget(config.cache_bytes, machine=machine_memory(), weights=weights_bytes(model_dir))
    if config.cache_dir is None:
        return ram, DiskBudget(0, 0, configured=True)
    return ram, disk_budget(config.cache_disk_bytes, config.cache_dir)
