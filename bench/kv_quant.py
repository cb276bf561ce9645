"""KV quantization of a kept prompt cache: bytes saved, cost of quantizing and dequantizing, effect on output.

    python bench/kv_quant.py [--model DIR] [--tokens 500] [--steps 8]

mlx-lm's batch cache (`BatchKVCache.merge`) only merges plain key/value arrays, and `mlx_lm.server` turns
batching off when `--kv-bits` is set: a quantized cache that the model writes into cannot join a batch. What
could stay batchable is quantizing only at rest (a slot kept quantized, dequantized when handed out). This
measures that: a prompt of `--tokens` tokens is prefilled once; for 8 and 4 bits its cache is quantized
(mlx-lm's `to_quantized`, group size 64), dequantized into a plain cache, and `--steps` greedy tokens are
generated from it and from the unquantized cache. Prints the bytes, both times, the first step's largest
logit difference and how many greedy tokens agree. Default model: SmolLM2-135M-Instruct (float32).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from preload import ensure_openblas

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GROUP = 64


def main() -> int:
    ensure_openblas()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    if args.model is None:
        from tests.smollm2 import smollm2_dir

        args.model = smollm2_dir()
    model, tokenizer = load(str(args.model))[:2]
    rule = "read each file before editing it, run the checks, keep answers short."
    text = " ".join(f"Rule {i}: {rule}" for i in range(200))
    ids = tokenizer.encode(text)[: args.tokens]
    base = make_prompt_cache(model)
    model(mx.array(ids[:-1])[None], cache=base)
    mx.eval([layer.state for layer in base])

    def plain_copy(layers: list[Any]) -> list[Any]:
        out = []
        for layer in layers:
            copy = KVCache()  # type: ignore[no-untyped-call]
            copy.keys = layer.keys[..., : layer.offset, :] + 0
            copy.values = layer.values[..., : layer.offset, :] + 0
            copy.offset = layer.offset
            out.append(copy)
        mx.eval([(layer.keys, layer.values) for layer in out])
        return out

    def greedy(cache: list[Any]) -> tuple[list[int], Any]:
        token, tokens, first = ids[-1], [], None
        for _ in range(args.steps):
            logits = model(mx.array([token])[None], cache=cache)[:, -1, :]
            first = logits if first is None else first
            token = int(mx.argmax(logits).item())
            tokens.append(token)
        return tokens, first

    held = sum(int(layer.keys[..., : layer.offset, :].nbytes) * 2 for layer in base)
    reference, reference_logits = greedy(plain_copy(base))
    print(f"{args.model.name}: {len(ids) - 1} tokens, {held / 1e6:.1f} MB of keys and values unquantized")
    for bits in (8, 4):
        started = time.perf_counter()
        quantized = [layer.to_quantized(group_size=GROUP, bits=bits) for layer in plain_copy(base)]
        mx.eval([layer.state for layer in quantized])
        quantize_s = time.perf_counter() - started
        size = sum(int(layer.nbytes) for layer in quantized)
        started = time.perf_counter()
        back = []
        for layer in quantized:
            plain = KVCache()  # type: ignore[no-untyped-call]
            plain.keys = mx.dequantize(*layer.keys, group_size=GROUP, bits=bits)[..., : layer.offset, :]
            plain.values = mx.dequantize(*layer.values, group_size=GROUP, bits=bits)[..., : layer.offset, :]
            plain.offset = layer.offset
            back.append(plain)
        mx.eval([(layer.keys, layer.values) for layer in back])
        dequantize_s = time.perf_counter() - started
        tokens, logits = greedy(back)
        agree = next((i for i, (a, b) in enumerate(zip(reference, tokens, strict=True)) if a != b), args.steps)
        diff = float(mx.max(mx.abs(logits - reference_logits)).item())
        print(
            f"{bits}-bit: {size / 1e6:.1f} MB ({size / held:.2f}x), quantize {quantize_s * 1000:.0f} ms, "
            f"dequantize {dequantize_s * 1000:.0f} ms, first step's max |logit diff| {diff:.3f}, "
            f"greedy tokens equal {agree}/{args.steps}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
