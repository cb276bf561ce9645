"""Slot files: round trip, atomic private writes, and files that must be skipped (corrupt, foreign, mismatched)."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from adapters.mlx_server.cache_disk import SavedSlot, load_slots, model_fingerprint, write_slots
from adapters.mlx_server.cache_mlx import MlxCacheOps, frozen_copy

LAYERS = 2


def kv_cache(tokens: int, seed: int = 0) -> list[Any]:
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    mx.random.seed(seed)
    cache = [KVCache() for _ in range(LAYERS)]  # type: ignore[no-untyped-call]
    for layer in cache:
        layer.update_and_fetch(mx.random.normal((1, 2, tokens, 4)), mx.random.normal((1, 2, tokens, 4)))  # type: ignore[no-untyped-call]
    return cache


def saved(slot_id: str, tokens: int, seed: int = 0) -> SavedSlot:
    return SavedSlot(slot_id, "", list(range(tokens)), tokens - 2, 3, frozen_copy(kv_cache(tokens, seed)))


def test_round_trip_keeps_tokens_and_values(tmp_path: Path) -> None:
    import mlx.core as mx

    folder = tmp_path / "cache" / "fp"
    original = saved("a", 5)
    write_slots(folder, "fp", [original], {"a"})
    [loaded] = load_slots(folder, "fp", LAYERS)
    assert (loaded.id, loaded.tokens, loaded.prompt_length, loaded.hits) == ("a", list(range(5)), 3, 3)
    for before, after in zip(original.cache, loaded.cache, strict=True):
        assert after.offset == 5
        assert mx.array_equal(before.keys, after.keys[..., :5, :]).item()


def test_files_are_private_and_no_temp_file_is_left(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "fp"
    write_slots(folder, "fp", [saved("a", 3)], {"a"})
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert [p.name for p in folder.iterdir()] == ["a.safetensors"]
    assert stat.S_IMODE((folder / "a.safetensors").stat().st_mode) == 0o600


def test_slots_no_longer_kept_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "fp"
    write_slots(folder, "fp", [saved("a", 3), saved("b", 4)], {"a", "b"})
    write_slots(folder, "fp", [], {"b"})
    assert [s.id for s in load_slots(folder, "fp", LAYERS)] == ["b"]


def test_corrupt_foreign_and_mismatched_files_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "fp"
    write_slots(folder, "fp", [saved("good", 3)], {"good"})
    write_slots(tmp_path / "other", "other", [saved("foreign", 3)], {"foreign"})
    (tmp_path / "other" / "foreign.safetensors").rename(folder / "foreign.safetensors")
    (folder / "corrupt.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    (folder / ".left-by-a-kill.tmp.safetensors").write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="anyclaude.mlx_server"):
        assert [s.id for s in load_slots(folder, "fp", LAYERS)] == ["good"]
        assert load_slots(folder, "fp", LAYERS + 1) == []  # a model with another layer count
    warned = caplog.text
    assert "corrupt.safetensors" in warned and "another model" in warned and "layers" in warned
    assert not (folder / ".left-by-a-kill.tmp.safetensors").exists()


def test_fingerprint_follows_weights_config_and_template(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"1234")
    first = model_fingerprint(tmp_path, "template")
    assert model_fingerprint(tmp_path, "template") == first
    assert model_fingerprint(tmp_path, "other template") != first
    (tmp_path / "model.safetensors").write_bytes(b"12345")
    assert model_fingerprint(tmp_path, "template") != first


def test_prefix_copy_and_frozen_copy_do_not_alias_the_source() -> None:
    import mlx.core as mx

    ops = MlxCacheOps()
    source = kv_cache(6)
    before = [mx.array(layer.keys[..., :6, :]) for layer in source]
    copy = ops.copy_prefix(source, 4, 6)
    frozen = frozen_copy(source)
    for layer in copy:  # extending the copy must not write into the source's buffer
        layer.update_and_fetch(mx.ones((1, 2, 2, 4)), mx.ones((1, 2, 2, 4)))
    ops.trim(source, 2)
    for layer in source:  # nor may writes into the source reach the frozen copy
        layer.update_and_fetch(mx.zeros((1, 2, 2, 4)), mx.zeros((1, 2, 2, 4)))
    for original, frozen_layer, copied in zip(before, frozen, copy, strict=True):
        assert mx.array_equal(frozen_layer.keys, original).item()
        assert mx.array_equal(copied.keys[..., :4, :], original[..., :4, :]).item()
        assert copied.offset == 6


def test_prefix_copy_is_extended_in_place_within_the_source_buffer() -> None:
    """The copy's views reach past the prefix, so its first write needs no new buffer (one op per array)."""
    import mlx.core as mx

    source = kv_cache(6)
    capacity = source[0].keys.shape[2]
    copy = MlxCacheOps().copy_prefix(source, 4, 6)
    for layer in copy:
        keys, _ = layer.update_and_fetch(mx.ones((1, 2, 3, 4)), mx.ones((1, 2, 3, 4)))
        assert keys.shape[2] == 7
        assert layer.keys.shape[2] == capacity  # not the prefix plus a freshly allocated step
