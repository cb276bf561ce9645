"""Backend kinds: exact argv, env and probes from a config, kind inference, and doctor checks."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters import checks as ch
from adapters.anthropic import AnthropicAdapter
from adapters.base import AdapterError, ApiKind, CheckStatus, LaunchSpec, Probe, infer_kind, launch_spec
from adapters.command import CommandAdapter
from adapters.llama_cpp import LlamaCppAdapter
from adapters.mlx_lm import READINESS_BODY, MlxLmAdapter, version_checks
from adapters.mlx_textgen import WRAPPER, MlxTextgenAdapter
from adapters.openblas import INSTALL_HINT, Blas, openblas_check, openblas_env
from adapters.remote import RemoteAdapter
from adapters.script import ScriptAdapter
from launcher.config import BackendConfig, Config, parse_config_text

PY = sys.executable


def config(entry: dict[str, Any], name: str = "b", env: dict[str, str] | None = None) -> Config:
    return parse_config_text(json.dumps({"backends": {name: entry}}), Path("x.json"), env=env or {})


def launch(adapter: Any, entry: dict[str, Any], name: str = "b", env: dict[str, str] | None = None) -> LaunchSpec:
    cfg = config(entry, name, env)
    spec: LaunchSpec = adapter.launch(name, cfg.backends[name], cfg)
    return spec


def entry_of(entry: dict[str, Any], name: str = "b") -> BackendConfig:
    return config(entry, name).backends[name]


# --- kind inference -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("mlx-lm", "mlx-lm"),
        ("mlx-textgen", "mlx-textgen"),
        ("mlx", "mlx-server"),
        ("mistralrs", "mistralrs"),
        ("llama-cpp", "llama-cpp"),
        ("lmstudio", "remote"),
        ("openrouter-fast", "remote"),
        ("claude", "anthropic"),
        ("mlx-legacy", "script"),
    ],
)
def test_kind_is_inferred_from_the_name(name: str, kind: str) -> None:
    assert infer_kind(name, entry_of({}, name)) == kind


def test_server_script_means_legacy_script_whatever_the_name() -> None:
    assert infer_kind("mlx-lm", entry_of({"serverScript": "/s/run.py"}, "mlx-lm")) == "script"


def test_an_unknown_name_with_a_base_url_is_remote_and_type_wins() -> None:
    assert infer_kind("cluster", entry_of({"baseUrl": "http://10.0.0.5:8000/v1"}, "cluster")) == "remote"
    assert infer_kind("claude", entry_of({"type": "llama-cpp"}, "claude")) == "llama-cpp"


# --- command and script -------------------------------------------------------------------------


def test_command_fills_placeholders() -> None:
    spec = launch(CommandAdapter(), {"command": ["srv", "--port={port}", "{model}"], "port": 9001, "model": "/m"})
    assert spec.argv == ("srv", "--port=9001", "/m")
    assert spec.readiness == Probe("http://127.0.0.1:9001/health")
    assert spec.base_url == "http://127.0.0.1:9001/v1"


def test_script_runs_python_scripts_with_the_configured_python() -> None:
    spec = launch(ScriptAdapter(), {"serverScript": "/s/server.py", "port": 9002, "model": "/m", "args": ["-v"]})
    assert spec.argv == (PY, "/s/server.py", "--port", "9002", "--host", "127.0.0.1", "--model", "/m", "-v")
    assert spec.env["MODEL_PATH"] == "/m"


# --- mlx-lm --------------------------------------------------------------------------------------


def test_mlx_lm_argv_env_and_probes(tmp_path: Path) -> None:
    entry = {
        "port": 8081,
        "model": "/models/smol",
        "chatTemplateArgs": {"enable_thinking": False},
        "promptCacheSize": 4,
        "logLevel": "debug",
        "env": {"HF_HUB_CACHE": str(tmp_path)},
    }
    spec = launch(MlxLmAdapter(), {**entry, "args": ["--temp", "0.2"]})
    assert spec.argv == (
        *(PY, "-m", "mlx_lm", "server", "--model", "/models/smol", "--host", "127.0.0.1", "--port", "8081"),
        *("--chat-template-args", '{"enable_thinking":false}', "--prompt-cache-size", "4", "--log-level", "DEBUG"),
        *("--temp", "0.2"),
    )
    assert spec.env == {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)} | openblas_env("")
    # No "model" in the readiness body: naming one sends mlx_lm.server to the Hub.
    assert spec.readiness == Probe("http://127.0.0.1:8081/v1/chat/completions", method="POST", json=READINESS_BODY)
    assert "model" not in READINESS_BODY
    assert spec.liveness == Probe("http://127.0.0.1:8081/health")
    assert (spec.api, spec.base_url, spec.port) == (ApiKind.OPENAI, "http://127.0.0.1:8081/v1", 8081)


def test_mlx_lm_points_hf_cache_at_the_usual_folder_by_default() -> None:
    spec = launch(MlxLmAdapter(), {"port": 8081, "model": "/m"})
    assert spec.env["HF_HUB_CACHE"] == str(Path("~/.cache/huggingface/hub").expanduser())


@pytest.mark.parametrize(("entry", "field"), [({"port": 1}, "backends.b.model"), ({"model": "/m"}, "backends.b.port")])
def test_mlx_lm_names_the_missing_field(entry: dict[str, Any], field: str) -> None:
    with pytest.raises(AdapterError, match=field):
        launch(MlxLmAdapter(), entry)


def test_mlx_lm_distributed_wraps_the_server_in_mlx_launch() -> None:
    dist = {"hosts": ["10.0.0.1", "10.0.0.2"], "backend": "ring"}
    spec = launch(MlxLmAdapter(), {"port": 8081, "model": "/m", "distributed": dist})
    launcher = Path(PY).parent / "mlx.launch"
    assert spec.argv == (
        str(launcher) if launcher.exists() else "mlx.launch",
        *("--hosts", "10.0.0.1,10.0.0.2", "--backend", "ring", "--"),
        *(PY, "-m", "mlx_lm", "server", "--model", "/m", "--host", "127.0.0.1", "--port", "8081", "--pipeline"),
    )


def test_mlx_lm_distributed_hostfile_and_tensor_parallel() -> None:
    dist = {"hostfile": "/etc/hosts.json", "backend": "mpi", "pipeline": False}
    argv = launch(MlxLmAdapter(), {"port": 8081, "model": "/m", "distributed": dist}).argv
    assert argv[1:6] == ("--hostfile", "/etc/hosts.json", "--backend", "mpi", "--")
    assert "--pipeline" not in argv


@pytest.mark.parametrize(
    ("dist", "message"),
    [
        ({"hosts": ["mac1.local", "mac2.local"]}, "ring backend needs IP addresses"),
        ({}, "either hosts or hostfile"),
        ({"hosts": ["10.0.0.1"], "hostfile": "/h.json"}, "either hosts or hostfile"),
        ({"hosts": ["10.0.0.1"], "nodes": "2"}, "unknown key 'nodes'"),
    ],
)
def test_mlx_lm_distributed_rejects_what_mlx_launch_would(dist: dict[str, Any], message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        launch(MlxLmAdapter(), {"port": 8081, "model": "/m", "distributed": {"backend": "ring", **dist}})


@pytest.mark.parametrize(
    ("version", "entry", "status", "needed"),
    [
        ("0.27.1", {}, CheckStatus.FAIL, "0.28.0"),
        ("0.30.5", {"distributed": {"hosts": ["10.0.0.1"]}}, CheckStatus.FAIL, "0.30.7"),
        ("0.30.7", {"promptCacheSize": 2}, CheckStatus.FAIL, "0.31.0"),
        ("0.32.2", {"promptCacheSize": 2, "distributed": {"hosts": ["10.0.0.1"]}}, CheckStatus.OK, "0.32.2"),
    ],
)
def test_mlx_lm_version_checks(version: str, entry: dict[str, Any], status: CheckStatus, needed: str) -> None:
    (found,) = version_checks(version, entry_of(entry))
    assert found.status == status
    assert needed in found.finding


# --- mlx-textgen ---------------------------------------------------------------------------------


def test_mlx_textgen_runs_the_wrapper_and_probes_models() -> None:
    spec = launch(MlxTextgenAdapter(), {"port": 5001, "model": "/m", "pythonVenv": "/nowhere/venv"})
    assert spec.argv == ("bash", str(WRAPPER), "-m", "/m", "--model-name", "m", "-p", "5001", "--host", "127.0.0.1")
    assert spec.model_name == "m"  # the name requests must carry
    assert WRAPPER.is_file()
    assert spec.readiness == spec.liveness == Probe("http://127.0.0.1:5001/v1/models")
    assert spec.env == {"ANYCLAUDE_PYTHON": "/nowhere/venv/bin/python"} | openblas_env("")


# --- llama-cpp -----------------------------------------------------------------------------------


def test_llama_cpp_argv_and_anthropic_api(tmp_path: Path) -> None:
    binary = tmp_path / "llama-server"
    binary.write_text("")
    entry = {"port": 8090, "model": "/g/smol.gguf", "binary": str(binary), "contextLength": 32768, "threads": 1}
    spec = launch(LlamaCppAdapter(), entry)
    assert spec.argv == (
        *(str(binary), "-m", "/g/smol.gguf", "--host", "127.0.0.1", "--port", "8090"),
        *("-c", "32768", "-t", "1", "--jinja"),
    )
    # The API root: the proxy appends the client's /v1/messages (a /v1 base made every request a 404).
    assert (spec.api, spec.base_url) == (ApiKind.ANTHROPIC, "http://127.0.0.1:8090")
    assert spec.readiness == Probe("http://127.0.0.1:8090/health")


def test_llama_cpp_warns_about_a_short_context(tmp_path: Path) -> None:
    entry = entry_of({"port": 8090, "model": str(tmp_path / "m.gguf"), "binary": "/no/llama-server"})
    found = {c.name: c for c in LlamaCppAdapter().checks("b", entry, config({}))}
    assert found["llama-cpp.context"].status == CheckStatus.WARN
    assert found["llama-cpp.binary"].status == CheckStatus.FAIL


# --- remote and anthropic ------------------------------------------------------------------------


def test_remote_probes_models_with_the_key_and_marks_it_secret() -> None:
    entry = {"baseUrl": "https://openrouter.ai/api/v1/", "apiKey": "${OPENROUTER_API_KEY}"}
    spec = launch(RemoteAdapter(), entry, name="openrouter", env={"OPENROUTER_API_KEY": "sk-or-123"})
    assert spec.argv == () and not spec.spawns
    assert spec.base_url == "https://openrouter.ai/api/v1"
    assert spec.readiness == Probe("https://openrouter.ai/api/v1/models", headers={"Authorization": "Bearer sk-or-123"})
    assert "sk-or-123" in spec.secrets


def test_remote_without_a_key_sends_no_authorization() -> None:
    spec = launch(RemoteAdapter(), {"baseUrl": "http://127.0.0.1:1234/v1"}, name="lmstudio")
    assert spec.readiness == Probe("http://127.0.0.1:1234/v1/models")
    assert (spec.host, spec.port, spec.secrets) == ("127.0.0.1", 1234, ())


def test_remote_needs_a_base_url() -> None:
    with pytest.raises(AdapterError, match=r"backends\.lmstudio\.baseUrl"):
        launch(RemoteAdapter(), {}, name="lmstudio")


def test_anthropic_passes_through_without_probing() -> None:
    spec = launch(AnthropicAdapter(), {}, name="claude")
    assert (spec.argv, spec.base_url, spec.api, spec.readiness) == (
        (),
        "https://api.anthropic.com",
        ApiKind.ANTHROPIC,
        None,
    )


def test_anthropic_check_warns_without_a_key() -> None:
    entry, cfg = entry_of({}, "claude"), config({}, "claude")
    assert AnthropicAdapter().checks("claude", entry, cfg, env={})[0].status == CheckStatus.WARN
    assert AnthropicAdapter().checks("claude", entry, cfg, env={"ANTHROPIC_API_KEY": "k"})[0].status == CheckStatus.OK


# --- OpenBLAS ------------------------------------------------------------------------------------


def test_openblas_is_preloaded_on_linux_only_and_merged() -> None:
    lib = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
    system = Blas(lib, "system")
    assert openblas_env("", "darwin", find=lambda: system) == {}
    assert openblas_env("", "linux", find=lambda: None) == {}
    assert openblas_env("", "linux", find=lambda: system) == {"LD_PRELOAD": lib}
    assert openblas_env("/a.so:/b.so", "linux", find=lambda: system) == {"LD_PRELOAD": f"/a.so /b.so {lib}"}
    assert openblas_env(lib, "linux", find=lambda: system) == {"LD_PRELOAD": lib}


def test_the_wheels_openblas_brings_the_folder_of_its_fortran_runtime() -> None:
    wheel = Blas("/site/cmeel.prefix/lib/libopenblas.so.0", "cmeel-openblas", "/home/u/.anyclaude/lib/blas")
    assert openblas_env("", "linux", find=lambda: wheel) == {
        "LD_PRELOAD": wheel.library,
        "LD_LIBRARY_PATH": "/home/u/.anyclaude/lib/blas",
    }
    kept = openblas_env("", "linux", find=lambda: wheel, ld_library_path="/opt/lib")
    assert kept["LD_LIBRARY_PATH"] == "/home/u/.anyclaude/lib/blas:/opt/lib"


def test_openblas_check_says_how_to_install() -> None:
    missing = openblas_check("mlx-lm", "linux", find=lambda: None)
    assert missing is not None and missing.status == CheckStatus.WARN and missing.fix == INSTALL_HINT
    assert openblas_check("mlx-lm", "darwin", find=lambda: None) is None


# --- shared checks -------------------------------------------------------------------------------


def fake_model(root: Path) -> Path:
    root.mkdir()
    (root / "config.json").write_text("{}")
    (root / "model.safetensors").write_bytes(b"\0" * 4096)
    return root


def test_model_path_check_on_real_folders(tmp_path: Path) -> None:
    good = fake_model(tmp_path / "good")
    (tmp_path / "empty").mkdir()
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert ch.model_path_check("mlx-lm", str(good)).status == CheckStatus.OK
    assert ch.model_path_check("mlx-lm", str(tmp_path / "m.gguf")).status == CheckStatus.OK
    empty = ch.model_path_check("mlx-lm", str(tmp_path / "empty"))
    assert (empty.name, empty.status) == ("mlx-lm.model", CheckStatus.FAIL)
    assert "config.json" in empty.finding and "safetensors" in empty.finding
    assert ch.model_path_check("mlx-lm", str(tmp_path / "absent")).status == CheckStatus.FAIL
    assert ch.model_path_check("mlx-lm", None).status == CheckStatus.FAIL


def test_model_path_check_finds_hub_ids_in_the_local_cache(tmp_path: Path) -> None:
    (tmp_path / "models--org--tiny" / "snapshots" / "abc123").mkdir(parents=True)
    assert ch.model_path_check("mlx-lm", "org/tiny", hf_cache=tmp_path).status == CheckStatus.OK
    missing = ch.model_path_check("mlx-lm", "org/other", hf_cache=tmp_path)
    assert missing.status == CheckStatus.FAIL and "org/other" in (missing.fix or "")


def test_model_memory_check_warns_past_eighty_percent(tmp_path: Path) -> None:
    model = fake_model(tmp_path / "m")
    assert ch.model_memory_check(str(model), available=4096).status == CheckStatus.WARN
    assert ch.model_memory_check(str(model), available=10 * 4096).status == CheckStatus.OK


def test_port_check_names_the_process_holding_the_port() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        taken = ch.port_check("127.0.0.1", port)
    assert taken.status == CheckStatus.FAIL
    assert f"pid {os.getpid()}" in taken.finding
    assert ch.port_check("127.0.0.1", port).status == CheckStatus.OK


def test_binary_check_finds_or_explains(tmp_path: Path) -> None:
    missing = ch.binary_check("llama-cpp", ["llama-server-not-here"], None, install="apt-get install llama.cpp")
    assert (missing.status, missing.fix) == (CheckStatus.FAIL, "apt-get install llama.cpp")
    found = ch.binary_check("llama-cpp", ["x"], PY)
    assert found.status == CheckStatus.OK and "Python 3" in found.finding


def test_package_check() -> None:
    assert ch.package_check("mlx-lm", "pip install mlx-lm").status == CheckStatus.OK
    absent = ch.package_check("anyclaude-no-such-dist", "pip install it")
    assert (absent.name, absent.status, absent.fix) == (
        "anyclaude-no-such-dist.package",
        CheckStatus.FAIL,
        "pip install it",
    )


@pytest.mark.parametrize(("text", "parsed"), [("0.30.7", (0, 30, 7)), ("0.31.0rc1", (0, 31, 0)), ("1.2.dev3", (1, 2))])
def test_version_tuple(text: str, parsed: tuple[int, ...]) -> None:
    assert ch.version_tuple(text) == parsed


def test_mlx_lm_says_whether_its_model_can_see_images(tmp_path: Path) -> None:
    text_only, vision = tmp_path / "text", tmp_path / "vision"
    for folder, config_json in ((text_only, {"model_type": "llama"}), (vision, {"vision_config": {"depth": 2}})):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config_json))
    assert launch(MlxLmAdapter(), {"port": 8081, "model": str(text_only)}).accepts_images is False
    assert launch(MlxLmAdapter(), {"port": 8081, "model": str(vision)}).accepts_images is True
    assert launch(MlxLmAdapter(), {"port": 8081, "model": "/no/such/model"}).accepts_images is None


# --- contextLength reaches the proxy's prompt-size check for every kind (docs/reliability.md 18) -------------


@pytest.mark.parametrize(
    ("adapter", "entry"),
    [
        (CommandAdapter(), {"command": ["server", "{port}"], "port": 8081}),
        (ScriptAdapter(), {"serverScript": "/srv/server.py", "port": 8081}),
        (MlxLmAdapter(), {"model": "/m", "port": 8081}),
        (MlxTextgenAdapter(), {"model": "/m", "port": 8081}),
        (LlamaCppAdapter(), {"model": "/m.gguf", "port": 8081}),
        (RemoteAdapter(), {"baseUrl": "http://127.0.0.1:1234/v1"}),
        ("mistralrs", {"model": "/m", "port": 8081, "binary": PY}),
        ("mlx-server", {"model": "/m", "port": 8081}),
    ],
)
def test_context_length_is_in_the_spec_of_every_kind(adapter: Any, entry: dict[str, Any]) -> None:
    if adapter == "mistralrs":
        from adapters.mistralrs import MistralrsAdapter

        adapter = MistralrsAdapter(read=lambda binary: "Commands:\n  serve  Run\n")
    elif adapter == "mlx-server":
        from adapters.mlx_server.adapter import MlxServerAdapter

        adapter = MlxServerAdapter()
    assert launch(adapter, {**entry, "contextLength": 4096}).context_length == 4096


# --- a model folder's facts follow the folder (adapters/facts.py) ------------------------------------


def test_a_config_pointed_at_the_demo_folder_keeps_its_cap_sampling_and_window(tmp_path: Path) -> None:
    """`anyclaude init`'s mlx entry (contextLength 32768, no cap, no sampling) pointed at the demo model's folder."""
    from adapters.facts import write_folder_facts
    from adapters.mlx_server.default_model import DEFAULT_MODEL_FACTS
    from launcher.starter import starter_text

    folder = tmp_path / "SmolLM2-135M-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
    write_folder_facts(folder, **DEFAULT_MODEL_FACTS)
    data = json.loads(starter_text())
    data["backends"]["mlx"]["model"] = str(folder)
    config = parse_config_text(json.dumps(data), tmp_path / ".anyclauderc.json", {})
    spec = launch_spec("mlx", config)
    facts = spec.facts
    assert (facts.context_length, facts.max_output_tokens) == (8192, 256)
    assert (facts.temperature, facts.top_p) == (0.2, 0.9)
    assert facts.served_name == "SmolLM2-135M-Instruct"
    argv = list(spec.argv)
    assert argv[argv.index("--context-length") + 1] == "8192"  # our server is given the same window
    assert argv[argv.index("--temperature") + 1] == "0.2" and argv[argv.index("--top-p") + 1] == "0.9"
    assert spec.context_length == 8192  # and the proxy
    from launcher.supervision.gate import upstream_for

    upstream = upstream_for(spec, config.backends["mlx"])
    assert (upstream.context_length, upstream.max_output_tokens) == (8192, 256)


def test_an_entrys_own_keys_win_over_the_folders_within_its_window(tmp_path: Path) -> None:
    from adapters.facts import write_folder_facts

    folder = tmp_path / "m"
    folder.mkdir()
    write_folder_facts(folder, contextLength=8192, maxOutputTokens=256, temperature=0.2)
    entry = {"type": "mlx-server", "port": 8081, "model": str(folder), "contextLength": 4096, "maxOutputTokens": 64}
    config = Config.model_validate({"backend": "mlx", "backends": {"mlx": {**entry, "temperature": 0.0}}})
    facts = launch_spec("mlx", config).facts
    assert (facts.context_length, facts.max_output_tokens, facts.temperature) == (4096, 64, 0.0)
