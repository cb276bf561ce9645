"""GGUF → MLX import of the Qwen2 family and of types only llama.cpp's `gguf` package reads (Q5_0, K-quants),
with the tool-call fixes the Qwen2.5-Coder files need."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx_lm
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter, quants

from adapters.mlx_server.gguf_import import import_fixes, import_gguf
from adapters.model_fixes import fix_folder, folder_faults
from launcher.supervision.ports import free_port
from tests.harness import anyclaude
from tests.integration.test_gguf_import import (
    FFN,
    GGUF_NAMES,
    HIDDEN,
    LAYERS,
    N_HEAD,
    N_HEAD_KV,
    bpe_tokenizer_meta,
    chat_prompt,
    hf_weights,
    load_safetensors,
)

HEAD_DIM = HIDDEN // N_HEAD
# The Qwen2.5 template's tool instruction as the released GGUFs carry it: doubled braces inside a string literal.
BROKEN_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}{%- for tool in tools %}{{- tool | tojson }}"
    "{%- endfor %}"
    '{{- "</tools>\\nFor each function call, return a json object within <tool_call></tool_call> XML tags:\\n'
    '<tool_call>\\n{{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}}\\n</tool_call><|im_end|>\\n" }}'
    "{%- endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\\n{{ m['content'] }}<|im_end|>\\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\\n{% endif %}"
)
MARKERS = ["<tool_call>", "</tool_call>"]
TOOL = {"type": "function", "function": {"name": "Read", "parameters": {"type": "object", "properties": {}}}}


def qwen2_weights(vocab_size: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Random Qwen2 weights under Hugging Face names: llama's, plus q/k/v biases."""
    weights = hf_weights(vocab_size, tied=False, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for layer in range(LAYERS):
        for proj, rows in (("q_proj", HIDDEN), ("k_proj", N_HEAD_KV * HEAD_DIM), ("v_proj", N_HEAD_KV * HEAD_DIM)):
            weights[f"model.layers.{layer}.self_attn.{proj}.bias"] = (rng.standard_normal(rows) * 0.05).astype(
                np.float32
            )
    return weights


def gguf_name(hf: str) -> str:
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    top["lm_head.weight"] = "output.weight"
    if hf in top:
        return top[hf]
    _, _, layer, rest = hf.split(".", 3)
    module, _, suffix = rest.rpartition(".")
    return f"blk.{layer}.{GGUF_NAMES[module]}.{suffix}"


def write_qwen2_gguf(
    path: Path, weights: dict[str, np.ndarray], *, name: str, quant: GGMLQuantizationType | None = None
) -> dict[str, np.ndarray]:
    """Write a Qwen2 GGUF as llama.cpp does (no Q/K row permutation); 2-D tensors in `quant` when given.

    Returns each tensor as llama.cpp's reader decodes it, under its Hugging Face name."""
    tokenizer = bpe_tokenizer_meta()
    tokens: list[str] = [*tokenizer["tokenizer.ggml.tokens"], *MARKERS]
    types = [int(t) for t in np.array(tokenizer["tokenizer.ggml.token_type"])] + [4, 4]
    writer = GGUFWriter(str(path), "qwen2")
    writer.add_name(name)
    for key, value in (
        ("block_count", LAYERS),
        ("context_length", 4096),
        ("embedding_length", HIDDEN),
        ("feed_forward_length", FFN),
        ("attention.head_count", N_HEAD),
        ("attention.head_count_kv", N_HEAD_KV),
    ):
        writer.add_uint32(f"qwen2.{key}", value)
    writer.add_float32("qwen2.rope.freq_base", 1000000.0)
    writer.add_float32("qwen2.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_string("tokenizer.ggml.pre", "qwen2")
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("tokenizer.ggml.token_type", types)
    writer.add_array("tokenizer.ggml.merges", tokenizer["tokenizer.ggml.merges"])
    writer.add_uint32("tokenizer.ggml.eos_token_id", 2)
    writer.add_uint32("tokenizer.ggml.bos_token_id", 0)
    writer.add_bool("tokenizer.ggml.add_bos_token", False)
    writer.add_string("tokenizer.chat_template", BROKEN_TEMPLATE)
    decoded: dict[str, np.ndarray] = {}
    for hf, value in weights.items():
        if value.shape[0] == len(tokenizer["tokenizer.ggml.tokens"]):  # embeddings and lm_head: room for markers
            value = np.concatenate([value, np.zeros((len(MARKERS), value.shape[1]), np.float32)])
        if quant is not None and value.ndim == 2:
            raw = quants.quantize(value, quant)
            writer.add_tensor(gguf_name(hf), raw, raw_dtype=quant)
            decoded[hf] = quants.dequantize(raw, quant)
        else:
            writer.add_tensor(gguf_name(hf), value)
            decoded[hf] = value
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return decoded


@pytest.fixture
def vocab_size() -> int:
    return len(bpe_tokenizer_meta()["tokenizer.ggml.tokens"])


def test_qwen2_keeps_rows_and_biases_exactly(tmp_path: Path, vocab_size: int) -> None:
    original = qwen2_weights(vocab_size)
    decoded = write_qwen2_gguf(tmp_path / "q.gguf", original, name="Tiny Qwen2")

    out = import_gguf(tmp_path / "q.gguf", tmp_path / "model")

    imported = load_safetensors(out)
    assert set(imported) == set(decoded)
    for name, value in decoded.items():
        np.testing.assert_array_equal(imported[name], value, err_msg=name)
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["attention_bias"], config["rope_theta"]) == ("qwen2", True, 1000000.0)
    assert config["max_position_embeddings"] == 4096
    model, tokenizer = mlx_lm.load(str(out))[:2]
    prompt = chat_prompt(tokenizer, "hello world")
    assert 1 <= len([r.token for r in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=3)]) <= 3


def test_q5_0_tensors_are_dequantized_as_llama_cpp_reads_them(tmp_path: Path, vocab_size: int) -> None:
    original = qwen2_weights(vocab_size)
    decoded = write_qwen2_gguf(tmp_path / "q5.gguf", original, name="Tiny Qwen2", quant=GGMLQuantizationType.Q5_0)

    out = import_gguf(tmp_path / "q5.gguf", tmp_path / "model")

    imported = load_safetensors(out)
    quantized = "model.layers.0.mlp.up_proj.weight"
    assert not np.array_equal(decoded[quantized], original[quantized])  # the file really holds Q5_0 blocks
    for name, value in decoded.items():
        np.testing.assert_array_equal(imported[name], value, err_msg=name)


def test_qwen2_tokenizer_splits_digits_one_by_one(tmp_path: Path, vocab_size: int) -> None:
    write_qwen2_gguf(tmp_path / "q.gguf", qwen2_weights(vocab_size), name="Tiny Qwen2")
    tokenizer = mlx_lm.load(str(import_gguf(tmp_path / "q.gguf", tmp_path / "model")))[1]

    pieces = [tokenizer.decode([t]) for t in tokenizer.encode("one 123", add_special_tokens=False)]

    assert pieces[-3:] == ["1", "2", "3"]


def test_coder_import_writes_markers_as_text_and_repairs_the_template(tmp_path: Path, vocab_size: int) -> None:
    write_qwen2_gguf(tmp_path / "c.gguf", qwen2_weights(vocab_size), name="Qwen2.5 Coder 1.5B Instruct")

    out = import_gguf(tmp_path / "c.gguf", tmp_path / "model")

    assert import_fixes(out) == [
        "</tool_call> and <tool_call> are ordinary text for the tokenizer",
        "the template's example tool call has single braces",
    ]
    tokenizer = mlx_lm.load(str(out))[1]
    assert len(tokenizer.encode("<tool_call>", add_special_tokens=False)) > 1
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tools=[TOOL], add_generation_prompt=True, tokenize=False
    )
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' in rendered
    assert folder_faults(out) == []


def test_other_qwen2_models_keep_their_marker_tokens(tmp_path: Path, vocab_size: int) -> None:
    write_qwen2_gguf(tmp_path / "q.gguf", qwen2_weights(vocab_size), name="Qwen2.5 7B Instruct")

    out = import_gguf(tmp_path / "q.gguf", tmp_path / "model")

    tokenizer = mlx_lm.load(str(out))[1]
    assert len(tokenizer.encode("<tool_call>", add_special_tokens=False)) == 1
    assert import_fixes(out) == ["the template's example tool call has single braces"]


def _broken_coder_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    added: list[dict[str, Any]] = [
        {"id": 10 + i, "content": m, "special": False} for i, m in enumerate(["<|im_end|>", *MARKERS])
    ]
    (folder / "tokenizer.json").write_text(json.dumps({"added_tokens": added, "model": {"type": "BPE"}}))
    decoder = {str(t["id"]): {"content": t["content"]} for t in added}
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": BROKEN_TEMPLATE, "added_tokens_decoder": decoder})
    )
    return folder


def test_folder_faults_are_found_and_fixed_in_place(tmp_path: Path) -> None:
    folder = _broken_coder_folder(tmp_path / "Qwen2.5-Coder-1.5B-Instruct")

    faults = folder_faults(folder)
    changed = fix_folder(folder)

    assert [f.what for f in faults] == [
        "tokenizer.json declares </tool_call> and <tool_call> as tokens",
        "the chat template shows the example tool call with doubled braces ({{...}})",
    ]
    assert len(changed) == 2
    assert folder_faults(folder) == []
    kept = [t["content"] for t in json.loads((folder / "tokenizer.json").read_text())["added_tokens"]]
    assert kept == ["<|im_end|>"]
    assert fix_folder(folder) == []


def test_a_folder_of_another_family_has_no_marker_fault(tmp_path: Path) -> None:
    folder = _broken_coder_folder(tmp_path / "Qwen2.5-7B-Instruct")

    assert [f.what for f in folder_faults(folder)] == [
        "the chat template shows the example tool call with doubled braces ({{...}})"
    ]


def test_doctor_flags_the_faults_and_models_fix_repairs_them(tmp_path: Path) -> None:
    folder = _broken_coder_folder(tmp_path / "Qwen2.5-Coder-1.5B-Instruct")
    entry = {"type": "mlx-server", "port": free_port(), "model": str(folder)}
    config = tmp_path / ".anyclauderc.json"
    config.write_text(json.dumps({"port": free_port(), "backend": "mlx", "backends": {"mlx": entry}}))

    def tools_row() -> dict[str, Any]:
        done = anyclaude("doctor", "--json", "--config", str(config))
        return next(row for row in json.loads(done.stdout)["checks"] if row["name"].endswith(".tools"))

    before = tools_row()
    fixed = anyclaude("models", "fix", str(folder))
    after = tools_row()

    assert before["status"] == "warn" and "declares </tool_call> and <tool_call> as tokens" in before["finding"]
    assert f"anyclaude models fix {folder}" in before["fix"]
    assert fixed.returncode == 0 and "Fixed: the template's example tool call has single braces." in fixed.stdout
    assert after["status"] == "ok", after
