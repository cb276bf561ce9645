"""The tokenizer stored in GGUF metadata, rebuilt as a Hugging Face `tokenizers` tokenizer and its config.

Two kinds convert: `gpt2` (byte-level BPE with one of the known pre-tokenizer splits) and `llama`
(sentencepiece, rebuilt as a byte-fallback BPE whose merges follow sentencepiece's scores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from adapters.mlx_server.gguf_meta import meta_bool, meta_int

# GGUF token types (llama.cpp's llama_token_type).
_TOKEN_NORMAL, _TOKEN_CONTROL, _TOKEN_USER_DEFINED = 1, 3, 4

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# `tokenizer.ggml.pre` values whose pre-tokenizer is the GPT-2 split, with single digits split off first.
_DIGIT_FIRST_PRES = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"}
_GPT2_PRES = {"default", "gpt2", "gpt-2", "mpt", "olmo", "jais", "trillion"}
_LLAMA3_PRES = {"llama-bpe", "llama3", "llama-v3"}
# Qwen2's split: the llama 3 one, with every digit a piece of its own.
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
_QWEN2_PRES = {"qwen2"}


def build_tokenizer(
    src: Path, meta: dict[str, Any], *, arch: str = "llama", text_markers: frozenset[str] = frozenset()
) -> tuple[Tokenizer, dict[str, Any]]:
    """Rebuild the tokenizer stored in GGUF metadata `meta` of file `src`.

    Args:
        src: the GGUF file (for messages).
        meta: its metadata.
        arch: `general.architecture`, the prefix of the model's own metadata keys.
        text_markers: user-defined tokens to leave out of the added tokens, so that the text is tokenized as
            ordinary pieces (tool-call markers a model writes as text; see `adapters.model_fixes`).

    Returns:
        The tokenizer and the matching `tokenizer_config.json` contents.

    Raises:
        ValueError: the metadata lacks a tokenizer key, or the tokenizer kind or pre-tokenizer is unknown.
    """
    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list):
        raise ValueError(f"{src.name} has no 'tokenizer.ggml.tokens'; re-export it with llama.cpp's convert script.")
    types_list = meta.get("tokenizer.ggml.token_type")
    types = cast(list[int], types_list) if isinstance(types_list, list) else [_TOKEN_NORMAL] * len(tokens)
    if kind == "gpt2":
        tokenizer = _bpe_tokenizer(src, meta, tokens)
        add_bos = meta_bool(meta, "tokenizer.ggml.add_bos_token", False)
    elif kind == "llama":
        tokenizer = _spm_tokenizer(src, meta, tokens, types)
        add_bos = meta_bool(meta, "tokenizer.ggml.add_bos_token", True)
    else:
        raise ValueError(
            f"{src.name} has tokenizer.ggml.model {kind!r}; only 'gpt2' (byte-level BPE) and 'llama' "
            "(sentencepiece) convert here. Use an MLX model folder instead."
        )
    tokenizer.add_tokens(
        [
            _added(t, special=False)
            for t, k in zip(tokens, types, strict=True)
            if k == _TOKEN_USER_DEFINED and t not in text_markers
        ]
    )
    tokenizer.add_special_tokens(
        [_added(t, special=True) for t, k in zip(tokens, types, strict=True) if k == _TOKEN_CONTROL]
    )
    bos_id = meta_int(src, meta, "tokenizer.ggml.bos_token_id", -1)
    if add_bos and bos_id >= 0:
        bos = tokens[bos_id]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return tokenizer, _tokenizer_config(src, meta, tokens, add_bos, arch)


def _added(content: str, *, special: bool) -> AddedToken:
    return AddedToken(content, special=special, normalized=False)


def _bpe_tokenizer(src: Path, meta: dict[str, Any], tokens: list[str]) -> Tokenizer:
    merges = meta.get("tokenizer.ggml.merges")
    if not isinstance(merges, list):
        raise ValueError(f"{src.name} has a BPE tokenizer without 'tokenizer.ggml.merges'; the file is incomplete.")
    pre = str(meta.get("tokenizer.ggml.pre", "default"))
    vocab = {token: index for index, token in enumerate(tokens)}
    pairs = [cast(tuple[str, str], tuple(merge.split(" ", 1))) for merge in merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre in _LLAMA3_PRES))
    tokenizer.pre_tokenizer = _bpe_pre_tokenizer(src, pre)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _bpe_pre_tokenizer(src: Path, pre: str) -> pre_tokenizers.PreTokenizer:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for pres, pattern in ((_LLAMA3_PRES, _LLAMA3_SPLIT), (_QWEN2_PRES, _QWEN2_SPLIT)):
        if pre in pres:
            split = pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
            return pre_tokenizers.Sequence([split, byte_level])
    gpt2_split = pre_tokenizers.Split(Regex(_GPT2_SPLIT), behavior="isolated", invert=False)
    if pre in _GPT2_PRES:
        return pre_tokenizers.Sequence([gpt2_split, byte_level])
    if pre in _DIGIT_FIRST_PRES:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), gpt2_split, byte_level])
    raise ValueError(
        f"{src.name} uses BPE pre-tokenizer {pre!r}, which this importer does not know; "
        "use an MLX model folder for this model instead."
    )


def _spm_tokenizer(src: Path, meta: dict[str, Any], tokens: list[str], types: list[int]) -> Tokenizer:
    scores_list = meta.get("tokenizer.ggml.scores")
    if not isinstance(scores_list, list):
        raise ValueError(f"{src.name} has a sentencepiece tokenizer without 'tokenizer.ggml.scores'; it is incomplete.")
    scores = cast(list[float], scores_list)
    vocab = {token: index for index, token in enumerate(tokens)}
    unk = tokens[meta_int(src, meta, "tokenizer.ggml.unknown_token_id", 0)]
    model = models.BPE(
        vocab=vocab, merges=_spm_merges(tokens, scores, types), unk_token=unk, fuse_unk=True, byte_fallback=True
    )
    tokenizer = Tokenizer(model)
    steps: list[normalizers.Normalizer] = [normalizers.Replace(" ", "▁")]
    if meta_bool(meta, "tokenizer.ggml.add_space_prefix", True):
        steps.insert(0, normalizers.Prepend("▁"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return tokenizer


def _spm_merges(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """BPE merges equivalent to sentencepiece's rule: join the adjacent pair whose result scores highest."""
    normal = {token: index for index, token in enumerate(tokens) if types[index] == _TOKEN_NORMAL}
    ranked: list[tuple[float, int, int, str, str]] = []
    for token, index in normal.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in normal and right in normal:
                ranked.append((-scores[index], normal[left], normal[right], left, right))
    ranked.sort()
    return [(left, right) for _, _, _, left, right in ranked]


def _tokenizer_config(src: Path, meta: dict[str, Any], tokens: list[str], add_bos: bool, arch: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "add_bos_token": add_bos,
        "model_max_length": meta_int(src, meta, f"{arch}.context_length"),
    }
    for role, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        index = meta_int(src, meta, f"tokenizer.ggml.{key}_token_id", -1)
        if 0 <= index < len(tokens):
            config[f"{role}_token"] = tokens[index]
    template = meta.get("tokenizer.chat_template")
    if isinstance(template, str):
        config["chat_template"] = template
    return config
