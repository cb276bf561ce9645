"""Last-position logits: the shortcut agrees with the model's own call, and models it does not fit keep that call.

Real mlx-lm models (the tiny llama with its own head, and a tied-embedding one), real MLX arrays on the CPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

mx = pytest.importorskip("mlx.core")
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402
from mlx_lm.utils import load  # noqa: E402

from adapters.mlx_server.heads import full_call, last_logits  # noqa: E402


def _load(folder: Path) -> Any:
    return load(str(folder))[0]


@pytest.fixture(scope="module")
def tied_model_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny llama with its output head tied to the input embedding (the head weights dropped)."""
    folder = tmp_path_factory.mktemp("tiny-tied")
    for item in tiny_model.iterdir():
        shutil.copy(item, folder / item.name)
    config = json.loads((folder / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (folder / "config.json").write_text(json.dumps(config))
    weights = mx.load(str(folder / "model.safetensors"))
    del weights["lm_head.weight"]
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    return folder


def _logits_over_a_prompt(model: Any, logits: Any, chunks: list[list[int]]) -> list[Any]:
    """The last position's logits after each chunk, fed in turn through one cache."""
    cache = make_prompt_cache(model)
    out = []
    for chunk in chunks:
        out.append(logits(mx.array(chunk, dtype=mx.int32)[None], cache))
        mx.eval(out[-1])
    return out


@pytest.mark.parametrize("tied", [False, True], ids=["own head", "tied embedding"])
def test_shortcut_is_taken_and_matches_the_full_call(tiny_model: Path, tied_model_dir: Path, tied: bool) -> None:
    model = _load(tied_model_dir if tied else tiny_model)
    logits, shortcut = last_logits(model)
    assert shortcut, "a plain llama should get the last-position shortcut"
    chunks = [[5, 17, 42, 99, 120, 7, 64], [33], [250, 251, 252]]
    fast = _logits_over_a_prompt(model, logits, chunks)
    full = _logits_over_a_prompt(model, full_call(model), chunks)
    for got, expected in zip(fast, full, strict=True):
        assert got.shape == (1, model.args.vocab_size)
        assert mx.allclose(got, expected, atol=1e-4).item()
        assert mx.argmax(got).item() == mx.argmax(expected).item()


def test_a_model_that_scales_its_logits_keeps_its_own_call(tiny_model: Path) -> None:
    """An outer call that does more than the head (here: scaling, as some architectures do) fails the check."""
    model = _load(tiny_model)
    plain_call = type(model).__call__

    class Scaled(type(model)):  # type: ignore[misc]
        def __call__(self, inputs: Any, cache: Any = None, input_embeddings: Any = None) -> Any:
            return plain_call(self, inputs, cache, input_embeddings) * 0.5

    model.__class__ = Scaled
    logits, shortcut = last_logits(model)
    assert not shortcut
    prompt = mx.array([[5, 17, 42, 99]], dtype=mx.int32)
    expected = model(prompt, cache=make_prompt_cache(model))[:, -1, :]
    assert mx.array_equal(logits(prompt, make_prompt_cache(model)), expected).item()


def test_a_model_without_the_usual_parts_keeps_its_own_call(tiny_model: Path) -> None:
    model = _load(tiny_model)
    inner = model.model
    del model["model"]  # mlx modules keep their children as dict items
    model.transformer = inner  # built differently: no `model.model`
    _, shortcut = last_logits(model)
    assert not shortcut
