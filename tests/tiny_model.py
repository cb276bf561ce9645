"""A tiny random-weight llama for fast server tests: 2 layers, hidden 64, float32, a small BPE tokenizer.

Its output is gibberish: cap `max_tokens` and never wait for EOS. Generation is deterministic at
temperature 0, so tests can pick stop strings from what greedy decoding produced.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EOS = "<|im_end|>"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", EOS)

# Renders `tools` (as JSON, one per line) in a system block when given, so a prompt with tools is longer.
CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nYou can call these tools:"
    "{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_TEXT = """\
The quick brown fox jumps over the lazy dog. A small model reads a short story about a river that runs
through a quiet town. Every morning the baker opens the shop, the children walk to school, and the old
clock in the square strikes eight. People talk about the weather, the harvest, the market and the news.
What is the capital of France? Paris is the capital of France. Rome is the capital of Italy. Berlin is the
capital of Germany. Madrid is the capital of Spain. Numbers: one two three four five six seven eight nine ten.
The server streams tokens to the client, which prints them as they arrive. Tools can read files, write files,
list folders and run commands. The answer should be short, clear and correct; otherwise try again tomorrow.
"""


def make_tiny_llama(dst: Path, *, vocab: int = 358, context: int = 512) -> Path:
    """Write a tiny random llama model folder to `dst` and return it.

    Args:
        dst: folder to create (or fill).
        vocab: tokenizer and embedding size; must leave room for the 256 byte tokens and 3 specials.
        context: `max_position_embeddings`, the context length the server enforces.
    """
    from mlx_lm.models import llama

    tokenizer = _write_tokenizer(dst, vocab, context)
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "max_position_embeddings": context,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "eos_token_id": tokenizer.token_to_id(EOS),
    }
    _write_weights(dst, config, lambda: llama.Model(llama.ModelArgs.from_dict(config)))  # type: ignore[no-untyped-call]
    return dst


def make_tiny_llama4(dst: Path, *, vocab: int = 358, context: int = 512) -> Path:
    """A tiny random Llama-4 text model: its chunked-attention layers' caches cannot merge into a batch."""
    from mlx_lm.models import llama4

    tokenizer = _write_tokenizer(dst, vocab, context)
    text_config: dict[str, Any] = {
        "model_type": "llama4_text",
        "attention_bias": False,
        "attention_chunk_size": 64,
        "head_dim": 16,
        "hidden_size": 64,
        "interleave_moe_layer_step": 4,
        "intermediate_size": 64,
        "intermediate_size_mlp": 128,
        "max_position_embeddings": context,
        "num_attention_heads": 4,
        "num_experts_per_tok": 1,
        "num_hidden_layers": 4,
        "num_key_value_heads": 2,
        "num_local_experts": 2,
        "rms_norm_eps": 1e-5,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "use_qk_norm": False,
        "vocab_size": vocab,
    }
    config: dict[str, Any] = {
        "model_type": "llama4",
        "text_config": text_config,
        "torch_dtype": "float32",
        "eos_token_id": tokenizer.token_to_id(EOS),
    }
    _write_weights(dst, config, lambda: llama4.Model(llama4.ModelArgs.from_dict(config)))  # type: ignore[no-untyped-call]
    return dst


def _write_weights(dst: Path, config: dict[str, Any], build: Callable[[], Any]) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    (dst / "config.json").write_text(json.dumps(config, indent=2))
    mx.random.seed(0)  # before `build`: the weights are drawn when the model is made
    weights = dict(tree_flatten(build().parameters()))
    mx.save_safetensors(str(dst / "model.safetensors"), weights, metadata={"format": "mlx"})


def _write_tokenizer(dst: Path, vocab: int, context: int) -> Any:
    dst.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab)
    tokenizer.save(str(dst / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS,
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "unk_token": None,
        "model_max_length": context,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(tokenizer.token_to_id(t)): {
                "content": t,
                "special": True,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
            }
            for t in SPECIAL_TOKENS
        },
    }
    (dst / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return tokenizer


def _train_tokenizer(vocab: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_TEXT] * 4, trainer=trainer)
    if tokenizer.get_vocab_size() != vocab:
        raise ValueError(f"the built-in text yields {tokenizer.get_vocab_size()} tokens, not {vocab}")
    return tokenizer


def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, context: int = 2048) -> Path:
    """Create the tiny model once per test session (a context long enough for the queue and cancel tests)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), context=context)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random llama folder, made once per session."""
    return tiny_model_dir(tmp_path_factory)
