"""The disk tier's bookkeeping (which slot to load, which to evict, load or compute) and the budgets from memory."""

from __future__ import annotations

from pathlib import Path

from adapters.mlx_server.cache_budget import (
    MIN_MARGIN_BYTES,
    MIN_RAM_BYTES,
    cache_budgets,
    disk_budget,
    ram_budget,
    weights_bytes,
)
from adapters.mlx_server.cache_slots import Owner
from adapters.mlx_server.cache_tier import DiskSlot, DiskTier
from adapters.mlx_server.config import ModelSpec, ServerConfig

GIB = 1 << 30
MAIN = Owner("s1")
AGENT = Owner("s1", "agent-1")


def disk_slot(slot_id: str, tokens: list[int], owner: Owner = MAIN, nbytes: int = 100, key: str = "m") -> DiskSlot:
    return DiskSlot(slot_id, key, tokens, len(tokens), 0, owner, nbytes)


def test_the_ram_budget_is_the_memory_left_after_the_weights_and_a_margin() -> None:
    budget = ram_budget(None, machine=64 * GIB, weights=17 * GIB)
    assert budget.bytes == 64 * GIB - 17 * GIB - 16 * GIB  # a quarter of the memory kept free
    assert "machine 64.0 GiB - model weights 17.0 GiB - margin 16.0 GiB" in budget.describe()
    small = ram_budget(None, machine=16 * GIB, weights=4 * GIB)
    assert small.margin == MIN_MARGIN_BYTES and small.bytes == 8 * GIB


def test_the_ram_budget_never_falls_to_nothing_and_cache_bytes_overrides_it() -> None:
    assert ram_budget(None, machine=8 * GIB, weights=7 * GIB).bytes == MIN_RAM_BYTES
    configured = ram_budget(123, machine=8 * GIB, weights=7 * GIB)
    assert configured.bytes == 123 and "cacheBytes" in configured.describe()


def test_the_disk_budget_is_a_tenth_of_the_free_space_where_the_folder_will_be(tmp_path: Path) -> None:
    budget = disk_budget(None, tmp_path / "not" / "made" / "yet")
    assert budget.free > 0 and budget.bytes == budget.free // 10
    assert disk_budget(5, tmp_path).bytes == 5


def test_budgets_read_the_default_models_weights_and_no_disk_tier_without_a_folder(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1000)
    assert weights_bytes(tmp_path) == 1000
    config = ServerConfig(models=(ModelSpec("m", str(tmp_path)),), cache_dir=None)
    ram, disk = cache_budgets(config, tmp_path)
    assert ram.weights == 1000 and ram.machine > 0 and disk.bytes == 0


def test_the_disk_slot_sharing_the_longest_prefix_is_chosen_under_its_key() -> None:
    tier = DiskTier(10_000)
    tier.add(disk_slot("short", [1, 2, 3, 9]))
    tier.add(disk_slot("long", [1, 2, 3, 4, 5, 9]))
    tier.add(disk_slot("other", [1, 2, 3, 4, 5, 6], key="other-model"))
    found = tier.best("m", [1, 2, 3, 4, 5, 6, 7])
    assert found is not None and found[0].id == "long" and found[1] == 5
    assert tier.best("m", [7, 8]) is None


def test_a_slot_the_new_one_holds_all_of_is_forgotten() -> None:
    tier = DiskTier(10_000)
    tier.add(disk_slot("turn1", [1, 2, 3]))
    tier.add(disk_slot("turn2", [1, 2, 3, 4, 5]))
    assert [s.id for s in tier.slots] == ["turn2"]
    tier.covered_by("m", [1, 2, 3, 4, 5, 6])
    assert tier.slots == []


def test_the_disk_budget_evicts_side_requests_then_subagents_before_a_main_conversation() -> None:
    tier = DiskTier(300)
    tier.add(disk_slot("main", [1] * 100, MAIN))
    tier.add(disk_slot("agent", [2] * 100, AGENT))
    tier.add(disk_slot("side", [1, 7], MAIN))  # the main owner's short side request
    tier.add(disk_slot("new", [3] * 100, Owner("s2")))
    gone = tier.fit(0)
    assert [s.id for s in gone] == ["side"]
    assert [s.id for s in tier.fit(150)] == ["agent", "main"]  # 150 bytes of RAM slots' files count too
    assert tier.stats.dropped == 3


def test_loading_is_chosen_only_while_it_beats_computing_at_the_measured_rates() -> None:
    tier = DiskTier(10_000)
    slot = disk_slot("s", [1] * 1000, nbytes=100_000_000)  # 100 MB
    first = tier.choose("m", slot, 1000)
    assert first.load and "no load measured yet" in first.reason
    tier.loaded(100_000_000, 0.1)  # 1 GB/s
    tier.compute_rates["m"] = 1000.0  # 1,000 tokens/s: 1000 tokens take 1 s, the load 0.1 s
    assert tier.choose("m", slot, 1000).load
    tier.compute_rates["m"] = 100_000.0  # 1000 tokens take 0.01 s
    choice = tier.choose("m", slot, 1000)
    assert not choice.load and choice.reason.startswith("computing 1000 tokens")
