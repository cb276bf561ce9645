"""`.anyclauderc.json`: parsing, errors a person can act on, discovery, precedence and the editor schema."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.base import AdapterError, fill_placeholders, infer_kind
from launcher.config import (
    CONFIG_NAME,
    DEFAULT_PROXY_PORT,
    BackendConfig,
    Config,
    load_settings,
    parse_config_text,
)
from launcher.config_schema import config_json_schema
from launcher.errors import EXIT_USAGE, ConfigError

REPO = Path(__file__).resolve().parents[2]
X = Path("x.json")
KEY = "sk-ant-very-secret-key-1234"


def parse(data: dict[str, Any] | str, env: dict[str, str] | None = None, path: Path = X) -> Config:
    text = data if isinstance(data, str) else json.dumps(data)
    return parse_config_text(text, path, env or {})


def error(data: dict[str, Any] | str, env: dict[str, str] | None = None, path: Path = X) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(data, env, path)
    return info.value


def entry(data: dict[str, Any], name: str = "b", env: dict[str, str] | None = None) -> BackendConfig:
    return parse({"backends": {name: data}}, env).backends[name]


# --- good input ------------------------------------------------------------------------------


def test_defaults() -> None:
    config = parse({})
    assert config.host == "127.0.0.1"
    assert config.port == DEFAULT_PROXY_PORT == 49152
    assert config.backend is None
    assert config.backends == {}
    assert config.api_key is None


def test_a_full_backend_entry() -> None:
    config = parse(
        {
            "backend": "mlx",
            "port": 9000,
            "models": {"claude-sonnet-4": "qwen"},
            "backends": {"mlx": {"port": 8081, "model": "/models/q", "startupTimeout": 5000, "args": ["--x"]}},
        }
    )
    mlx = config.backends["mlx"]
    assert (config.backend, config.port, config.models) == ("mlx", 9000, {"claude-sonnet-4": "qwen"})
    assert (mlx.port, mlx.model, mlx.startup_timeout, mlx.args) == (8081, "/models/q", 5000, ["--x"])
    assert (mlx.restart_delay, mlx.max_restarts, mlx.stable_after) == (1000, 5, 30000)


def test_config_is_frozen() -> None:
    config = parse({"port": 9000})
    with pytest.raises(ValueError):
        config.port = 9001  # type: ignore[misc]


@pytest.mark.parametrize(
    ("camel", "snake", "attr", "value"),
    [
        ("serverScript", "server_script", "server_script", "/abs/run.py"),
        ("startupTimeout", "startup_timeout", "startup_timeout", 1234),
        ("autoStartServer", "auto_start_server", "auto_start_server", False),
        ("baseUrl", "base_url", "base_url", "http://10.0.0.2:1234/v1"),
        ("healthPath", "health_path", "health_path", "/v1/models"),
    ],
)
def test_camel_and_snake_case_keys_both_work(camel: str, snake: str, attr: str, value: object) -> None:
    assert getattr(entry({camel: value}), attr) == value
    assert getattr(entry({snake: value}), attr) == value


def test_top_level_snake_and_camel_case() -> None:
    assert parse({"logMaxBytes": 4096}).log_max_bytes == 4096
    assert parse({"log_max_bytes": 4096}).log_max_bytes == 4096


@pytest.mark.parametrize("key", ["model", "modelPath", "model_path"])
def test_model_path_aliases(key: str) -> None:
    assert entry({key: "/models/qwen"}).model == "/models/qwen"


def test_comment_keys_are_ignored_at_every_level() -> None:
    config = parse(
        {
            "//": "top comment",
            "// port": "explains the port",
            "port": 9000,
            "backends": {
                "//": "backends comment",
                "mlx": {"//": "entry comment", "port": 8081, "chatTemplateArgs": {"//": "c", "enable_thinking": False}},
            },
        }
    )
    assert config.port == 9000
    assert list(config.backends) == ["mlx"]
    assert config.backends["mlx"].chat_template_args == {"enable_thinking": False}


def test_env_var_expansion() -> None:
    env = {"MODELS": "/data/models", "EMPTY": "", "PORT": "8090"}
    mlx = entry(
        {
            "model": "${MODELS}/qwen",
            "description": "${UNSET:-fallback} ${MODELS:-unused} ${EMPTY:-empty-default} [${UNSET}]",
            "port": "${PORT:-9000}",
            "args": ["--dir=${MODELS}"],
            "env": {"X": "${MODELS}"},
        },
        env=env,
    )
    assert mlx.model == "/data/models/qwen"
    assert mlx.description == "fallback /data/models empty-default []"
    assert mlx.port == 8090
    assert mlx.args == ["--dir=/data/models"]
    assert mlx.env == {"X": "/data/models"}


def test_env_default_used_for_a_number() -> None:
    assert entry({"port": "${NOPE:-9000}"}).port == 9000


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cfg"
    mlx = entry_at(folder / CONFIG_NAME, {"serverScript": "scripts/run.py", "pythonVenv": "../venv", "model": "./m"})
    assert mlx.server_script == str(folder / "scripts" / "run.py")
    assert mlx.python_venv == str(tmp_path / "venv")
    assert mlx.model == str(folder / "m")


def test_absolute_paths_and_model_names_are_kept(tmp_path: Path) -> None:
    mlx = entry_at(tmp_path / CONFIG_NAME, {"serverScript": "/opt/run.py", "model": "mlx-community/Qwen3-4B"})
    assert mlx.server_script == "/opt/run.py"
    assert mlx.model == "mlx-community/Qwen3-4B"


def test_tilde_paths_expand_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    mlx = entry_at(tmp_path / CONFIG_NAME, {"serverScript": "~/run.py", "model": "~/models/q"})
    assert mlx.server_script == str(tmp_path / "home" / "run.py")
    assert mlx.model == str(tmp_path / "home" / "models" / "q")


def entry_at(path: Path, data: dict[str, Any]) -> BackendConfig:
    return parse({"backends": {"b": data}}, path=path).backends["b"]


def test_non_loopback_host_with_api_key_is_accepted() -> None:
    config = parse({"host": "0.0.0.0", "apiKey": KEY})
    assert config.api_key is not None
    assert config.api_key.get_secret_value() == KEY


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_hosts_need_no_key(host: str) -> None:
    assert parse({"host": host}).host == host


# --- errors ----------------------------------------------------------------------------------


def test_bad_port_names_file_and_json_path() -> None:
    err = error({"backends": {"mlx": {"port": 80800}}})
    assert err.message == "x.json: backends.mlx.port: 80800 is not a valid port (1-65535)"
    assert err.exit_code == EXIT_USAGE
    assert err.hint and err.hint in str(err)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_top_level_port_out_of_range(port: int) -> None:
    assert error({"port": port}).message == f"x.json: port: {port} is not a valid port (1-65535)"


def test_negative_millis() -> None:
    err = error({"backends": {"b": {"startupTimeout": -5}}})
    assert err.message == "x.json: backends.b.startupTimeout: -5 is negative; give a duration in milliseconds"


def test_wrong_type_quotes_the_value() -> None:
    err = error({"backends": {"b": {"port": "abc"}}})
    assert err.message.startswith("x.json: backends.b.port: 'abc': ")
    assert "integer" in err.message


def test_list_items_are_named_by_index() -> None:
    assert error({"backends": {"b": {"args": ["ok", 5]}}}).message.startswith("x.json: backends.b.args[1]: 5: ")


def test_every_error_is_listed() -> None:
    lines = error({"port": 0, "backends": {"b": {"port": 0}}}).message.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("x.json: port: ")
    assert lines[1].strip().startswith("x.json: backends.b.port: ")


def test_broken_json_gives_line_and_column() -> None:
    err = error('{\n  "port": 9000,\n  "host": \n}')
    assert err.message.startswith("x.json: line 4 column 1: invalid JSON")


def test_trailing_comma_gives_line_and_column() -> None:
    assert error('{"port": 9000,}').message.startswith("x.json: line 1 column 15: invalid JSON")


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_file(text: str) -> None:
    assert error(text).message == "x.json: the file is empty"


@pytest.mark.parametrize("text", ["[]", "42", '"x"', "null"])
def test_top_level_must_be_an_object(text: str) -> None:
    assert error(text).message == "x.json: the top level must be a JSON object"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"backends": {"mlx": {"prot": 8080}}}, "x.json: backends.mlx.prot: unknown key (did you mean 'port'?)"),
        (
            {"backends": {"mlx": {"serverScrpt": "a.py"}}},
            "x.json: backends.mlx.serverScrpt: unknown key (did you mean 'serverScript'?)",
        ),
        (
            {"backends": {"mlx": {"server_scrpt": "a.py"}}},
            "x.json: backends.mlx.server_scrpt: unknown key (did you mean 'serverScript'?)",
        ),
        ({"prot": 8080}, "x.json: prot: unknown key (did you mean 'port'?)"),
        ({"backend": "b", "backendz": {}, "backends": {"b": {}}}, "x.json: backendz: unknown key (did you mean"),
        ({"zzzqqq": 1}, "x.json: zzzqqq: unknown key"),
    ],
)
def test_unknown_key_suggests_the_nearest(data: dict[str, Any], message: str) -> None:
    assert error(data).message.startswith(message)


def test_unknown_key_far_from_any_has_no_suggestion() -> None:
    assert "did you mean" not in error({"zzzqqq": 1}).message


def test_backend_naming_a_missing_entry() -> None:
    err = error({"backend": "mxl", "backends": {"mlx": {}}})
    assert err.message == "x.json: backend: 'mxl' is not one of the backends (did you mean 'mlx'?)"
    assert err.hint == "Known backends: mlx."


def test_non_loopback_host_without_key() -> None:
    err = error({"host": "0.0.0.0"})
    assert err.message == "x.json: host: binding the proxy to 0.0.0.0 exposes it to the network without a key"
    assert "apiKey" in (err.hint or "")


def test_error_names_the_real_file(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_NAME
    assert error({"port": 0}, path=path).message.startswith(f"{path}: port: ")


# --- secrets ---------------------------------------------------------------------------------


def test_api_keys_never_appear_in_repr_or_str() -> None:
    config = parse({"apiKey": KEY, "backends": {"b": {"apiKey": KEY + "-b"}}})
    assert KEY not in repr(config)
    assert KEY not in str(config)
    assert KEY not in repr(config.backends["b"])
    assert config.backends["b"].api_key is not None
    assert config.backends["b"].api_key.get_secret_value() == KEY + "-b"


def test_api_key_not_in_errors_about_other_fields() -> None:
    err = error({"apiKey": KEY, "port": 0, "backends": {"b": {"apiKey": KEY, "port": 0}}})
    assert KEY not in str(err)


@pytest.mark.parametrize(
    "data",
    [
        {"apiKey": 987654321123},
        {"api_key": 987654321123},
        {"backends": {"b": {"apiKey": 987654321123}}},
        {"backends": {"b": {"api_key": 987654321123}}},
    ],
)
def test_api_key_of_wrong_type_is_not_quoted(data: dict[str, Any]) -> None:
    err = error(data)
    assert "987654321123" not in str(err)
    assert "valid string" in err.message


def test_secret_env_value_of_wrong_type_is_not_quoted() -> None:
    err = error({"backends": {"b": {"env": {"HF_TOKEN": 987654321123}}}})
    assert "987654321123" not in str(err)


# --- load_settings: discovery and precedence ------------------------------------------------


def write(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("home", "cwd", "explicit", "envdir")}
    for name, folder in dirs.items():
        write(folder / CONFIG_NAME, {"backend": name, "backends": {name: {}, "other": {}}})
    return dirs


def env_for(places: dict[str, Path], **extra: str) -> dict[str, str]:
    return {"HOME": str(places["home"]), "ANYCLAUDE_HOME": str(places["home"] / ".anyclaude"), **extra}


def test_explicit_path_wins(places: dict[str, Path]) -> None:
    env = env_for(places, ANYCLAUDE_CONFIG=str(places["envdir"] / CONFIG_NAME))
    settings = load_settings(places["explicit"] / CONFIG_NAME, env=env, cwd=places["cwd"])
    assert settings.path == places["explicit"] / CONFIG_NAME
    assert settings.mode == "explicit"


def test_env_config_beats_cwd_and_home(places: dict[str, Path]) -> None:
    env = env_for(places, ANYCLAUDE_CONFIG=str(places["envdir"] / CONFIG_NAME))
    settings = load_settings(env=env, cwd=places["cwd"])
    assert settings.path == places["envdir"] / CONFIG_NAME
    assert settings.mode == "envdir"


def test_cwd_beats_home(places: dict[str, Path]) -> None:
    settings = load_settings(env=env_for(places), cwd=places["cwd"])
    assert settings.path == places["cwd"] / CONFIG_NAME
    assert settings.mode == "cwd"


def test_home_is_the_last_resort(places: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    settings = load_settings(env=env_for(places), cwd=empty)
    assert settings.path == places["home"] / CONFIG_NAME
    assert settings.mode == "home"
    assert settings.home.root == places["home"] / ".anyclaude"


def test_no_config_anywhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert CONFIG_NAME in info.value.message
    assert "--config" in info.value.message


def test_explicit_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_settings(missing, env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert info.value.message == f"{missing}: no such file"


def test_mode_precedence(places: dict[str, Path]) -> None:
    cfg = places["cwd"] / CONFIG_NAME
    assert load_settings(cfg, env=env_for(places)).mode == "cwd"
    assert load_settings(cfg, env=env_for(places, ANYCLAUDE_MODE="other")).mode == "other"
    settings = load_settings(cfg, mode="cwd", env=env_for(places, ANYCLAUDE_MODE="other"))
    assert settings.mode == "cwd"
    assert settings.entry is settings.config.backends["cwd"]


def test_unknown_mode_suggests_the_nearest(places: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(places["cwd"] / CONFIG_NAME, mode="othr", env=env_for(places))
    assert "there is no backend named 'othr' (did you mean 'other'?)" in info.value.message


def test_no_mode_chosen(tmp_path: Path) -> None:
    cfg = write(tmp_path / CONFIG_NAME, {"backends": {"a": {}}})
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={"HOME": str(tmp_path)})
    assert info.value.message == f"{cfg}: backend: no backend chosen"


def test_port_from_file_and_env_override(places: dict[str, Path]) -> None:
    cfg = write(places["cwd"] / "p.json", {"backend": "a", "port": 9000, "backends": {"a": {}}})
    assert load_settings(cfg, env=env_for(places)).port == 9000
    assert load_settings(cfg, env=env_for(places, ANYCLAUDE_PORT="9100")).port == 9100


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-5"])
def test_bad_anyclaude_port(places: dict[str, Path], value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(places["cwd"] / CONFIG_NAME, env=env_for(places, ANYCLAUDE_PORT=value))
    assert info.value.message == f"ANYCLAUDE_PORT: {value!r} is not a valid port (1-65535)"


def test_parent_death_signal_hook(places: dict[str, Path]) -> None:
    cfg = places["cwd"] / CONFIG_NAME
    assert load_settings(cfg, env=env_for(places)).parent_death_signal is True
    assert load_settings(cfg, env=env_for(places, ANYCLAUDE_PARENT_DEATH_SIGNAL="0")).parent_death_signal is False


def test_env_expansion_uses_the_given_env(places: dict[str, Path]) -> None:
    cfg = write(places["cwd"] / "e.json", {"backend": "a", "backends": {"a": {"model": "${M}"}}})
    assert load_settings(cfg, env=env_for(places, M="/m/q")).entry.model == "/m/q"


# --- the editor schema -----------------------------------------------------------------------


def _objects(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("additionalProperties") is False:
            found.append(node)
        for child in node.values():
            found += _objects(child)
    elif isinstance(node, list):
        for child in node:
            found += _objects(child)
    return found


def test_schema_allows_comment_keys_on_every_closed_object() -> None:
    schema = config_json_schema(Config)
    closed = _objects(schema)
    assert len(closed) >= 2  # Config and BackendConfig
    assert all(obj.get("patternProperties") == {"^//": {}} for obj in closed)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"backend", "backends", "port", "apiKey"} <= set(schema["properties"])
    assert {"serverScript", "startupTimeout", "port"} <= set(schema["$defs"]["BackendConfig"]["properties"])


needs_jsonschema = pytest.mark.skipif(importlib.util.find_spec("jsonschema") is None, reason="jsonschema not installed")


def _schema_errors(instance: Any) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(config_json_schema(Config))
    return [e.message for e in validator.iter_errors(instance)]


@needs_jsonschema
def test_schema_accepts_comments_and_rejects_unknown_keys() -> None:
    good = {"//": "c", "backend": "m", "backends": {"m": {"//": "c", "port": 8080, "serverScript": "r"}}}
    assert _schema_errors(good) == []
    assert _schema_errors({"prot": 1}) != []
    assert _schema_errors({"backends": {"m": {"prot": 1}}}) != []


@needs_jsonschema
def test_schema_accepts_a_comment_key_inside_backends() -> None:
    data = {"backends": {"//": "local servers", "m": {"port": 8080}}}
    assert parse(data).backends.keys() == {"m"}  # the parser accepts it
    assert _schema_errors(data) == []


@needs_jsonschema
def test_schema_accepts_the_model_path_alias() -> None:
    assert _schema_errors({"backends": {"m": {"modelPath": "/models/q"}}}) == []


@needs_jsonschema
def test_schema_validates_the_example_file() -> None:
    example = REPO / ".anyclauderc.example.json"
    if not example.is_file():
        pytest.skip("no .anyclauderc.example.json in the repository")
    data = json.loads(example.read_text(encoding="utf-8"))
    assert _schema_errors(data) == []
    parse(data)


# --- adapters/base helpers that read config entries -----------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("anything", {"type": "llama-cpp", "serverScript": "/r.py"}, "llama-cpp"),
        ("mlx", {"serverScript": "/r.py"}, "script"),
        ("mlx", {"command": ["srv", "--port", "{port}"]}, "command"),
        ("MLX_big", {}, "mlx-server"),
        ("mlx-lm-fast", {}, "mlx-lm"),
        ("mlxish", {"baseUrl": "http://h:1/v1"}, "remote"),
        ("llamacpp", {}, "llama-cpp"),
        ("claude", {}, "anthropic"),
    ],
)
def test_infer_kind(name: str, data: dict[str, Any], kind: str) -> None:
    assert infer_kind(name, entry(data, name)) == kind


def test_infer_kind_without_a_clue() -> None:
    with pytest.raises(AdapterError, match="cannot tell which kind of backend 'mystery' is"):
        infer_kind("mystery", entry({}, "mystery"))


@pytest.mark.parametrize(
    ("arg", "out"),
    [
        ("{port}", "8080"),
        ("--host={host}:{port}", "--host=127.0.0.1:8080"),
        ("{model}/{model}", "/m/q//m/q"),
        ('{"enable_thinking": false}', '{"enable_thinking": false}'),
        ("{other} {Port}", "{other} {Port}"),
        ("{{port}}", "{8080}"),
    ],
)
def test_fill_placeholders(arg: str, out: str) -> None:
    assert fill_placeholders(arg, {"port": "8080", "host": "127.0.0.1", "model": "/m/q"}) == out
