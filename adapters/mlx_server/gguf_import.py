"""Convert a llama or Qwen2 GGUF file into an MLX model folder that `mlx_lm.load` opens.

No torch and no network: tensors are read and dequantized by llama.cpp's own `gguf` package (every type it
knows: Q4_0 … Q8_0, the K-quants, F16/BF16/F32), llama.cpp's rope row order in llama's Q and K projections is
undone (Qwen2 keeps the Hugging Face order: its rope is NEOX-style), and the tokenizer stored in the GGUF
metadata is rebuilt as a Hugging Face `tokenizer.json`. Known tool-call faults of the model's family are
repaired on the way (`adapters.model_fixes`) and listed in the import record.

Folder written: `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`,
`chat_template.jinja` when the GGUF carries a chat template, and `anyclaude_import.json` (what was converted,
how, which fixes), written last so that its presence means the folder is complete.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
import numpy as np

from adapters.mlx_server.gguf_meta import meta_float, meta_int
from adapters.mlx_server.gguf_tokenizer import build_tokenizer
from adapters.model_fixes import markers_as_text, repair_template

Progress = Callable[[str, float], None]

DTYPES: dict[str, mx.Dtype] = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}

# Bump when a fix changes what an import writes, so cached conversions are redone (see `import_is_current`).
IMPORT_FORMAT = 3
IMPORT_RECORD = "anyclaude_import.json"

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


# Biases a family's attention has (llama none; Qwen2 on q, k and v).
_BIASES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj"}


@dataclass(frozen=True)
class _Family:
    """What differs between the architectures this importer converts."""

    model_type: str
    architectures: list[str]
    unpermute_qk: bool  # llama.cpp interleaves llama's Q/K rows for its rope kernel; NEOX-rope families keep them
    attention_bias: bool


_FAMILIES = {
    "llama": _Family("llama", ["LlamaForCausalLM"], unpermute_qk=True, attention_bias=False),
    "qwen2": _Family("qwen2", ["Qwen2ForCausalLM"], unpermute_qk=False, attention_bias=True),
}


@dataclass(frozen=True)
class _Shape:
    arch: str
    n_layers: int
    n_head: int
    n_head_kv: int
    hidden: int


def import_gguf(src: Path, dst: Path, *, dtype: str = "float32", progress: Progress | None = None) -> Path:
    """Convert the llama or Qwen2 GGUF file `src` into an MLX model folder at `dst`.

    Args:
        src: a GGUF file written by llama.cpp (any tensor type its `gguf` package dequantizes).
        dst: the folder to write; created if missing, files in it are overwritten.
        dtype: dtype of the dense weight matrices ("float32", "float16" or "bfloat16"); norms stay float32.
        progress: called with (stage, fraction in [0, 1]) as the conversion advances; stages are "read",
            "convert", "tokenizer" and "write", in that order.

    Returns:
        `dst`.

    Raises:
        ValueError: the file is not a llama or Qwen2 GGUF, lacks a key, or uses a type that cannot be converted.
    """
    report = progress or (lambda _stage, _fraction: None)
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
    report("read", 0.0)
    tensors, meta = _read(src)
    report("read", 1.0)
    shape = _check_shape(src, meta, tensors)
    weights = _convert_weights(tensors, shape, DTYPES[dtype], report)
    config = _config(src, meta, shape, tie=("lm_head.weight" not in weights))
    report("tokenizer", 0.0)
    name = f"{meta.get('general.name', '')} {meta.get('general.basename', '')} {src.name}"
    text_markers = markers_as_text(shape.arch, name)
    tokenizer, tokenizer_config = build_tokenizer(src, meta, arch=shape.arch, text_markers=text_markers)
    fixes = [f"{' and '.join(sorted(text_markers))} are ordinary text for the tokenizer"] if text_markers else []
    template = tokenizer_config.get("chat_template")
    if isinstance(template, str):
        template, repaired = repair_template(template)
        tokenizer_config["chat_template"] = template
        if repaired:
            fixes.append("the template's example tool call has single braces")
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
    record = {"format": IMPORT_FORMAT, "source": src.name, "dtype": dtype, "fixes": fixes}
    (dst / IMPORT_RECORD).write_text(json.dumps(record) + "\n", encoding="utf-8")
    report("write", 1.0)
    return dst


def import_fixes(folder: Path) -> list[str]:
    """The tool-call fixes an import applied to `folder` (empty when none, or not an import)."""
    try:
        record = json.loads((folder / IMPORT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    fixes = record.get("fixes") if isinstance(record, dict) else None
    return [str(f) for f in fixes] if isinstance(fixes, list) else []


def import_is_current(folder: Path) -> bool:
    """True when `folder` holds a complete import written by this version's format."""
    try:
        record = json.loads((folder / IMPORT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == IMPORT_FORMAT


def _read(src: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The file's tensors (read lazily, memory-mapped) and its metadata as plain Python values."""
    if not src.is_file():
        raise ValueError(f"GGUF file {src} does not exist; check the path.")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(src)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"Cannot read {src.name} as GGUF ({exc}); is it a complete GGUF file?") from exc
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if not key.startswith("GGUF."):
            meta[key] = field.contents()
    return {tensor.name: tensor for tensor in reader.tensors}, meta


def _check_shape(src: Path, meta: dict[str, Any], tensors: dict[str, Any]) -> _Shape:
    arch = meta.get("general.architecture")
    if arch not in _FAMILIES:
        raise ValueError(
            f"{src.name} is a {arch!r} model; only {' and '.join(map(repr, _FAMILIES))} GGUFs convert here. "
            "Use an MLX model folder for it instead."
        )
    if "rope_freqs.weight" in tensors:
        raise ValueError(
            f"{src.name} uses llama3 rope scaling (rope_freqs), which this importer does not convert; "
            "use an MLX model folder (e.g. from mlx-community) instead."
        )
    n_head = meta_int(src, meta, f"{arch}.attention.head_count")
    hidden = meta_int(src, meta, f"{arch}.embedding_length")
    head_dim = meta_int(src, meta, f"{arch}.attention.key_length", hidden // n_head)
    rope_dims = meta_int(src, meta, f"{arch}.rope.dimension_count", head_dim)
    if rope_dims != head_dim:
        raise ValueError(
            f"{src.name} applies rope to {rope_dims} of {head_dim} head dimensions, which mlx-lm cannot run; "
            "use an MLX model folder instead."
        )
    return _Shape(
        arch=arch,
        n_layers=meta_int(src, meta, f"{arch}.block_count"),
        n_head=n_head,
        n_head_kv=meta_int(src, meta, f"{arch}.attention.head_count_kv", n_head),
        hidden=hidden,
    )


def _hf_name(gguf_name: str, family: _Family) -> str | None:
    base, _, suffix = gguf_name.rpartition(".")
    if suffix == "weight" and base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.weight"
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if not match:
        return None
    layer, part = match.groups()
    if suffix == "weight" and part in _LAYER_NAMES:
        return f"model.layers.{layer}.{_LAYER_NAMES[part]}.weight"
    if suffix == "bias" and family.attention_bias and part in _BIASES:
        return f"model.layers.{layer}.{_BIASES[part]}.bias"
    return None


def _dense(tensor: Any) -> mx.array:
    """A GGUF tensor as a dense float32 array in row-major (Hugging Face) orientation."""
    from gguf import GGMLQuantizationType, quants

    try:
        values = quants.dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as exc:
        name = GGMLQuantizationType(tensor.tensor_type).name
        raise ValueError(f"tensor {tensor.name} is of type {name}, which cannot be dequantized here") from exc
    shape = tuple(int(n) for n in reversed(tensor.shape))
    return mx.array(np.asarray(values, dtype=np.float32).reshape(shape))


def unpermute_rope_rows(weight: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's per-head row interleaving of a Q or K projection (rows = n_heads * head_dim).

    llama.cpp's converter turns each head's [first half; second half] rows into interleaved pairs for its
    rope kernel; mlx-lm's llama expects the Hugging Face order.
    """
    rows = weight.shape[0]
    return weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _convert_weights(tensors: dict[str, Any], shape: _Shape, dtype: mx.Dtype, report: Progress) -> dict[str, mx.array]:
    family = _FAMILIES[shape.arch]
    names = sorted(n for n in tensors if _hf_name(n, family) is not None)
    missing = [n for n in ("token_embd.weight", "output_norm.weight") if n not in tensors]
    if missing:
        raise ValueError(f"GGUF lacks tensor(s) {', '.join(missing)}; the file is incomplete, download it again.")
    # Dropping a tensor mlx-lm's model has no slot for (a bias, say) would load fine and generate garbage.
    unmapped = sorted(set(tensors) - set(names))
    if unmapped:
        raise ValueError(
            f"GGUF has tensors a plain {shape.arch} does not use ({', '.join(unmapped[:3])}); "
            "use an MLX model folder for this model instead."
        )
    weights: dict[str, mx.array] = {}
    for index, name in enumerate(names):
        hf_name = cast(str, _hf_name(name, family))
        value = _dense(tensors[name])
        if family.unpermute_qk and ".attn_q." in name:
            value = unpermute_rope_rows(value, shape.n_head)
        elif family.unpermute_qk and ".attn_k." in name:
            value = unpermute_rope_rows(value, shape.n_head_kv)
        weights[hf_name] = value if value.ndim == 1 else value.astype(dtype)
        mx.eval(weights[hf_name])
        report("convert", (index + 1) / len(names))
    return weights


def _config(src: Path, meta: dict[str, Any], shape: _Shape, *, tie: bool) -> dict[str, Any]:
    arch, family = shape.arch, _FAMILIES[shape.arch]
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab_size = meta_int(src, meta, f"{arch}.vocab_size", len(tokens) if isinstance(tokens, list) else None)
    eos = meta_int(src, meta, "tokenizer.ggml.eos_token_id")
    eot = meta_int(src, meta, "tokenizer.ggml.eot_token_id", eos)
    config: dict[str, Any] = {
        "architectures": family.architectures,
        "model_type": family.model_type,
        "hidden_size": shape.hidden,
        "intermediate_size": meta_int(src, meta, f"{arch}.feed_forward_length"),
        "num_hidden_layers": shape.n_layers,
        "num_attention_heads": shape.n_head,
        "num_key_value_heads": shape.n_head_kv,
        "head_dim": meta_int(src, meta, f"{arch}.attention.key_length", shape.hidden // shape.n_head),
        "rms_norm_eps": meta_float(meta, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": meta_float(meta, f"{arch}.rope.freq_base", 10000.0),
        "max_position_embeddings": meta_int(src, meta, f"{arch}.context_length"),
        "vocab_size": vocab_size,
        "tie_word_embeddings": tie,
        "bos_token_id": meta_int(src, meta, "tokenizer.ggml.bos_token_id", eos),
        "eos_token_id": eos if eot == eos else [eos, eot],
        "attention_bias": family.attention_bias,
        "mlp_bias": False,
    }
    scaling = meta.get(f"{arch}.rope.scaling.type")
    if scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": meta_float(meta, f"{arch}.rope.scaling.factor", 1.0)}
    elif scaling not in (None, "none"):
        raise ValueError(f"{src.name} uses {scaling!r} rope scaling, which this importer does not convert.")
    return config
