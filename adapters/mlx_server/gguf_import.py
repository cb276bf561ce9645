"""Convert a llama-family GGUF file into an MLX model folder that `mlx_lm.load` opens.

No torch and no network: tensors are read with `mlx.core.load`, quantized blocks (Q4_0, Q4_1, Q8_0) are
dequantized to dense weights, llama.cpp's rope row order in the Q and K projections is undone, and the
tokenizer stored in the GGUF metadata is rebuilt as a Hugging Face `tokenizer.json`.

Folder written: `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`,
`chat_template.jinja` when the GGUF carries a chat template, and `anyclaude_import.json` (what was converted,
how), written last so that its presence means the folder is complete.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import mlx.core as mx

from adapters.mlx_server.gguf_meta import meta_float, meta_int
from adapters.mlx_server.gguf_tokenizer import build_tokenizer

Progress = Callable[[str, float], None]

DTYPES: dict[str, mx.Dtype] = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}

# Bump when a fix changes what an import writes, so cached conversions are redone (see `import_is_current`).
IMPORT_FORMAT = 2
IMPORT_RECORD = "anyclaude_import.json"

# llama.cpp stores every quantized type that mlx.core.load keeps quantized in blocks of 32 values.
GGUF_GROUP_SIZE = 32

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass(frozen=True)
class _Shape:
    n_layers: int
    n_head: int
    n_head_kv: int
    hidden: int


def import_gguf(src: Path, dst: Path, *, dtype: str = "float32", progress: Progress | None = None) -> Path:
    """Convert the llama-family GGUF file `src` into an MLX model folder at `dst`.

    Args:
        src: a GGUF file written by llama.cpp (F32, F16, Q4_0, Q4_1 or Q8_0 tensors).
        dst: the folder to write; created if missing, files in it are overwritten.
        dtype: dtype of the dense weight matrices ("float32", "float16" or "bfloat16"); norms stay float32.
        progress: called with (stage, fraction in [0, 1]) as the conversion advances; stages are "read",
            "convert", "tokenizer" and "write", in that order.

    Returns:
        `dst`.

    Raises:
        ValueError: the file is not a llama GGUF, lacks a key, or uses a type this importer cannot convert.
    """
    report = progress or (lambda _stage, _fraction: None)
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
    report("read", 0.0)
    tensors, meta = _read(src)
    report("read", 1.0)
    shape = _check_llama(src, meta, tensors)
    weights = _convert_weights(tensors, shape, DTYPES[dtype], report)
    config = _config(src, meta, shape, tie=("lm_head.weight" not in weights))
    report("tokenizer", 0.0)
    tokenizer, tokenizer_config = build_tokenizer(src, meta)
    report("tokenizer", 1.0)
    report("write", 0.0)
    dst.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(dst / "model.safetensors"), weights, metadata={"format": "mlx"})
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tokenizer.save(str(dst / "tokenizer.json"))
    (dst / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
    template = tokenizer_config.get("chat_template")
    if isinstance(template, str):
        (dst / "chat_template.jinja").write_text(template, encoding="utf-8")
    record = {"format": IMPORT_FORMAT, "source": src.name, "dtype": dtype}
    (dst / IMPORT_RECORD).write_text(json.dumps(record) + "\n", encoding="utf-8")
    report("write", 1.0)
    return dst


def import_is_current(folder: Path) -> bool:
    """True when `folder` holds a complete import written by this version's format."""
    try:
        record = json.loads((folder / IMPORT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == IMPORT_FORMAT


def _read(src: Path) -> tuple[dict[str, mx.array], dict[str, Any]]:
    if not src.is_file():
        raise ValueError(f"GGUF file {src} does not exist; check the path.")
    try:
        loaded = mx.load(str(src), format="gguf", return_metadata=True)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            f"Cannot read {src.name} as GGUF ({exc}); use an F32, F16, Q4_0, Q4_1 or Q8_0 llama GGUF."
        ) from exc
    tensors, meta = cast(tuple[dict[str, mx.array], dict[str, Any]], loaded)
    return tensors, meta


def _check_llama(src: Path, meta: dict[str, Any], tensors: dict[str, mx.array]) -> _Shape:
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(
            f"{src.name} is a {arch!r} model; only 'llama' GGUFs convert here. Use an MLX model folder for it instead."
        )
    if "rope_freqs.weight" in tensors:
        raise ValueError(
            f"{src.name} uses llama3 rope scaling (rope_freqs), which this importer does not convert; "
            "use an MLX model folder (e.g. from mlx-community) instead."
        )
    n_head = meta_int(src, meta, "llama.attention.head_count")
    hidden = meta_int(src, meta, "llama.embedding_length")
    head_dim = meta_int(src, meta, "llama.attention.key_length", hidden // n_head)
    rope_dims = meta_int(src, meta, "llama.rope.dimension_count", head_dim)
    if rope_dims != head_dim:
        raise ValueError(
            f"{src.name} applies rope to {rope_dims} of {head_dim} head dimensions, which mlx-lm's llama cannot run; "
            "use an MLX model folder instead."
        )
    return _Shape(
        n_layers=meta_int(src, meta, "llama.block_count"),
        n_head=n_head,
        n_head_kv=meta_int(src, meta, "llama.attention.head_count_kv", n_head),
        hidden=hidden,
    )


def _hf_name(gguf_name: str) -> str | None:
    base, _, suffix = gguf_name.rpartition(".")
    if suffix != "weight":
        return None
    if base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.weight"
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.weight"
    return None


def _dense(tensors: dict[str, mx.array], name: str) -> mx.array:
    """Tensor `name` as a dense float32 array, dequantizing the (weight, scales, biases) triple MLX loads."""
    weight = tensors[name]
    base = name.removesuffix(".weight")
    scales = tensors.get(f"{base}.scales")
    if scales is None:
        return weight.astype(mx.float32)
    biases = tensors[f"{base}.biases"]
    bits = weight.shape[-1] * 32 // (scales.shape[-1] * GGUF_GROUP_SIZE)
    # Dequantizing with float16 scales would round every weight to float16 before the cast.
    return mx.dequantize(
        weight, scales.astype(mx.float32), biases.astype(mx.float32), group_size=GGUF_GROUP_SIZE, bits=bits
    )


def unpermute_rope_rows(weight: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's per-head row interleaving of a Q or K projection (rows = n_heads * head_dim).

    llama.cpp's converter turns each head's [first half; second half] rows into interleaved pairs for its
    rope kernel; mlx-lm's llama expects the Hugging Face order.
    """
    rows = weight.shape[0]
    return weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _convert_weights(
    tensors: dict[str, mx.array], shape: _Shape, dtype: mx.Dtype, report: Progress
) -> dict[str, mx.array]:
    names = sorted(n for n in tensors if _hf_name(n) is not None)
    missing = [n for n in ("token_embd.weight", "output_norm.weight") if n not in tensors]
    if missing:
        raise ValueError(f"GGUF lacks tensor(s) {', '.join(missing)}; the file is incomplete, download it again.")
    # Dropping a tensor mlx-lm's llama has no slot for (a bias, say) would load fine and generate garbage.
    quant_parts = {f"{n.removesuffix('.weight')}.{part}" for n in names for part in ("scales", "biases")}
    unmapped = sorted(set(tensors) - set(names) - quant_parts)
    if unmapped:
        raise ValueError(
            f"GGUF has tensors a plain llama does not use ({', '.join(unmapped[:3])}); "
            "use an MLX model folder for this model instead."
        )
    weights: dict[str, mx.array] = {}
    for index, name in enumerate(names):
        hf_name = cast(str, _hf_name(name))
        value = _dense(tensors, name)
        if ".attn_q." in name:
            value = unpermute_rope_rows(value, shape.n_head)
        elif ".attn_k." in name:
            value = unpermute_rope_rows(value, shape.n_head_kv)
        weights[hf_name] = value if value.ndim == 1 else value.astype(dtype)
        mx.eval(weights[hf_name])
        report("convert", (index + 1) / len(names))
    return weights


def _config(src: Path, meta: dict[str, Any], shape: _Shape, *, tie: bool) -> dict[str, Any]:
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab_size = meta_int(src, meta, "llama.vocab_size", len(tokens) if isinstance(tokens, list) else None)
    eos = meta_int(src, meta, "tokenizer.ggml.eos_token_id")
    eot = meta_int(src, meta, "tokenizer.ggml.eot_token_id", eos)
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": meta_int(src, meta, "llama.feed_forward_length"),
        "num_hidden_layers": shape.n_layers,
        "num_attention_heads": shape.n_head,
        "num_key_value_heads": shape.n_head_kv,
        "head_dim": meta_int(src, meta, "llama.attention.key_length", shape.hidden // shape.n_head),
        "rms_norm_eps": meta_float(meta, "llama.attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": meta_float(meta, "llama.rope.freq_base", 10000.0),
        "max_position_embeddings": meta_int(src, meta, "llama.context_length"),
        "vocab_size": vocab_size,
        "tie_word_embeddings": tie,
        "bos_token_id": meta_int(src, meta, "tokenizer.ggml.bos_token_id", eos),
        "eos_token_id": eos if eot == eos else [eos, eot],
        "attention_bias": False,
        "mlp_bias": False,
    }
    scaling = meta.get("llama.rope.scaling.type")
    if scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": meta_float(meta, "llama.rope.scaling.factor", 1.0)}
    elif scaling not in (None, "none"):
        raise ValueError(f"{src.name} uses {scaling!r} rope scaling, which this importer does not convert.")
    return config
