"""Which tool-call parser our MLX server uses: mlx-lm's for every format it ships, ours only for the others."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.mlx_server.__main__ import _check_tool_parser
from adapters.mlx_server.mlx_tools import MlxToolStream, known_tool_parsers, mlx_parser_names
from adapters.mlx_server.output import CollectedOutput, OutputAssembler, tool_stream_for
from adapters.mlx_server.pool import LoadedModel
from adapters.tool_parsers import PARSERS, StreamingToolParser, ToolCallDelta
from tests.tiny_model import _write_tokenizer

TOOLS = [{"type": "function", "function": {"name": "Read", "parameters": {"type": "object", "properties": {}}}}]
OUR_OWN_ONLY = ("hermes", "harmony", "llama3_json")


def loaded_with(tokenizer: Any, model_type: str | None = None) -> LoadedModel:
    return LoadedModel(
        alias="m",
        path=Path("m"),
        model=None,
        tokenizer=tokenizer,
        context_length=None,
        model_type=model_type,
        nbytes=0,
        vocab_size=0,
    )


def real_tokenizer(folder: Path, chat_template: str, special: tuple[str, ...] = ()) -> Any:
    """mlx-lm's TokenizerWrapper for a small BPE tokenizer with this chat template and more special tokens."""
    from mlx_lm.tokenizer_utils import load
    from tokenizers import AddedToken, Tokenizer

    _write_tokenizer(folder, vocab=358, context=512)
    if special:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
        tokenizer.save(str(folder / "tokenizer.json"))
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = chat_template
    config_file.write_text(json.dumps(config))
    return load(folder)


def test_mlx_formats_are_discovered_from_the_installed_mlx_lm() -> None:
    import mlx_lm.tool_parsers

    shipped = {m.name for m in pkgutil.iter_modules(mlx_lm.tool_parsers.__path__) if not m.name.startswith("_")}
    assert mlx_parser_names() == shipped
    assert {"json_tools", "qwen3_coder", "glm47", "kimi_k2", "minimax_m2", "mistral", "pythonic"} <= shipped
    assert known_tool_parsers() == shipped | set(PARSERS)


@pytest.mark.parametrize("name", sorted(mlx_parser_names()))
def test_forced_tool_parser_mlx_lm_ships_is_mlx_lms_module(name: str) -> None:
    stream = tool_stream_for(loaded_with(None), TOOLS, forced=name)
    assert isinstance(stream, MlxToolStream)
    assert stream.name == name


@pytest.mark.parametrize("name", ["qwen3_coder", "mistral"])
def test_names_both_ship_mean_mlx_lms_parser(name: str) -> None:
    assert name in PARSERS  # ours stays, for the bridge
    assert isinstance(tool_stream_for(loaded_with(None), TOOLS, forced=name), MlxToolStream)


@pytest.mark.parametrize("name", OUR_OWN_ONLY)
def test_forced_tool_parser_mlx_lm_lacks_is_ours(name: str) -> None:
    assert name not in mlx_parser_names()
    assert isinstance(tool_stream_for(loaded_with(None), TOOLS, forced=name), StreamingToolParser)


@pytest.mark.parametrize("name", sorted(known_tool_parsers()))
def test_every_known_tool_parser_passes_the_start_check(name: str) -> None:
    _check_tool_parser(name)


def test_unknown_tool_parser_is_refused_at_start_with_the_known_names(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    done = subprocess.run(
        [sys.executable, "-m", "adapters.mlx_server", "--model", str(tmp_path), "--tool-parser", "glm4_moe"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "unknown tool parser 'glm4_moe'; known: " in done.stderr
    listed = done.stderr.rsplit("known: ", 1)[1].strip().split(", ")
    assert listed == sorted(known_tool_parsers())


def test_format_mlx_lm_infers_from_the_template_streams_each_call_of_a_block(tmp_path: Path) -> None:
    template = "{% for m in messages %}{{ m.content }}{% endfor %}<minimax:tool_call>"
    loaded = loaded_with(real_tokenizer(tmp_path, template))
    stream = tool_stream_for(loaded, TOOLS, forced=None)
    assert isinstance(stream, MlxToolStream)
    assert stream.name == "minimax_m2"
    first = stream.feed(
        '<minimax:tool_call>\n<invoke name="Read">\n<parameter name="file_path">/a</parameter>\n</invoke>'
    )
    assert [e.call.name for e in first if isinstance(e, ToolCallDelta)] == ["Read"]


def test_format_we_detect_and_mlx_lm_ships_is_parsed_by_mlx_lm(tmp_path: Path) -> None:
    # No marker in the template, so mlx-lm infers nothing; the model type says Mistral.
    loaded = loaded_with(real_tokenizer(tmp_path, "{% for m in messages %}{{ m.content }}{% endfor %}"), "mistral")
    assert not loaded.tokenizer.has_tool_calling
    stream = tool_stream_for(loaded, TOOLS, forced=None)
    assert isinstance(stream, MlxToolStream)
    assert stream.name == "mistral"


XTML = ("<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>")
K3_REPLY = (
    '<|open|>response<|sep|>I\'ll look.<|close|>response<|sep|><|open|>tools<|sep|><|open|>call tool="Read" '
    'index="1"<|sep|><|open|>argument key="file_path" type="string"<|sep|>/a.py<|close|>argument<|sep|>'
    "<|close|>call<|sep|><|close|>tools<|sep|>"
)


def run_assembler(assembler: OutputAssembler, text: str) -> CollectedOutput:
    out = CollectedOutput()
    for char in text:
        out.add(assembler.feed(char))
    out.add(assembler.finish())
    return out


@pytest.mark.parametrize("tools", [TOOLS, None], ids=["with-tools", "without-tools"])
def test_kimi_k3_reply_channel_markers_never_reach_the_client(tmp_path: Path, tools: Any) -> None:
    # mlx-lm knows an XTML vocabulary: Kimi K3's tool format, and the markers around its reply to drop.
    loaded = loaded_with(real_tokenizer(tmp_path, "{% for m in messages %}{{ m.content }}{% endfor %}", XTML))
    out = run_assembler(OutputAssembler(None, tool_stream_for(loaded, tools, forced=None)), K3_REPLY)
    if tools:
        assert out.content == "I'll look."
        assert [(c.name, json.loads(c.arguments)) for c in out.tool_calls] == [("Read", {"file_path": "/a.py"})]
    else:
        assert out.content == K3_REPLY.removeprefix("<|open|>response<|sep|>").replace("<|close|>response<|sep|>", "")


def test_a_tool_stream_behind_the_reply_markers_still_names_its_start_marker(tmp_path: Path) -> None:
    """The reasoning splitter ends the thinking at the tool format's start marker: the marker filter in front
    of the parser (Kimi K3's reply markers) must not hide it."""
    loaded = loaded_with(real_tokenizer(tmp_path, "{% for m in messages %}{{ m.content }}{% endfor %}", XTML))
    stream = tool_stream_for(loaded, TOOLS, forced=None)
    marker = getattr(stream, "start_marker", None)
    assert isinstance(marker, str) and marker and marker in K3_REPLY, marker
