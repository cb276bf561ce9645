"""Doctor checks of `.anyclauderc.json` and of each backend it would start.

Values of entries are never shown: only file paths, backend names, kinds and ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import adapters  # noqa: F401  (fills the adapter registry)
from adapters.anthropic import AnthropicAdapter
from adapters.base import Adapter, AdapterError, Check, CheckStatus, LaunchSpec, adapter_for, entry_secrets
from adapters.checks import port_check
from launcher.config import CONFIG_NAME, BackendConfig, Config, find_config, load_settings, parse_config_file
from launcher.control import Liveness
from launcher.doctor.running import excuse_own_port, proxy_port_check
from launcher.errors import ConfigError

NO_CONFIG_FIX = (
    f"Without one anyclaude runs its built-in demo model. For your own model: `anyclaude init` writes {CONFIG_NAME} "
    "here from the full example; or pass --config FILE."
)


def config_checks(
    config_path: str | None, mode: str | None, env: Mapping[str, str], cwd: Path, survey: list[Liveness]
) -> tuple[list[Check], tuple[str, ...]]:
    """The config file, the chosen mode, the proxy's port and every backend that would run.

    Returns the checks and the secret values the config holds (for the renderer to mask).
    """
    path = find_config(config_path, env, cwd)
    if path is None:
        looked = f"--config, $ANYCLAUDE_CONFIG, ./{CONFIG_NAME}, ~/{CONFIG_NAME}"
        found = [Check("config.file", CheckStatus.WARN, f"no {CONFIG_NAME} found (looked in {looked})", NO_CONFIG_FIX)]
        return found + _default_model_checks(env), ()
    try:
        config = parse_config_file(path, env)
    except ConfigError as exc:
        return [Check("config.file", CheckStatus.FAIL, exc.message, exc.hint or NO_CONFIG_FIX)], ()
    enabled = [name for name, entry in config.backends.items() if entry.enabled]
    summary = f"{path}: valid ({len(config.backends)} backends, {len(enabled)} enabled)"
    found = [Check("config.file", CheckStatus.OK, summary)]
    active: str | None = None
    try:
        settings = load_settings(path, mode, env, cwd)
    except ConfigError as exc:
        name = "config.port" if exc.message.startswith("ANYCLAUDE_PORT") else "config.mode"
        found.append(Check(name, CheckStatus.FAIL, exc.message, exc.hint))
    else:
        active = settings.mode
        chosen = f"mode {active} ({_mode_source(mode, env)})"
        if not settings.entry.enabled:
            chosen += '; it is marked "enabled": false and runs because it was chosen'
        found.append(Check("config.mode", CheckStatus.OK, chosen))
        found.append(proxy_port_check(settings.config.host, settings.port, survey))
    names = ([active] if active else []) + [name for name in enabled if name != active]
    for name in names:
        found += backend_checks(name, config, env, survey)
    return found, config_secrets(config)


def _default_model_checks(env: Mapping[str, str]) -> list[Check]:
    """What the built-in default (what runs without a config) can do, once its model is on disk."""
    from launcher.defaults import DEFAULT_MODE, default_config
    from launcher.paths import Home

    entry = default_config(Home.from_env(dict(env)).models).backends[DEFAULT_MODE]
    tools = tools_check(f"backend.{DEFAULT_MODE}.tools", entry)
    return [tools] if tools is not None else []


def _mode_source(mode: str | None, env: Mapping[str, str]) -> str:
    if mode:
        return "from --mode"
    if env.get("ANYCLAUDE_MODE"):
        return "from $ANYCLAUDE_MODE"
    return 'from "backend" in the config'


def backend_checks(name: str, config: Config, env: Mapping[str, str], survey: list[Liveness]) -> list[Check]:
    """The adapter's own checks for one backend, named `backend.<name>.<check>`, plus its launch spec."""
    prefix = f"backend.{name}"
    entry = config.backends[name]
    try:
        adapter = adapter_for(name, entry)
    except AdapterError as exc:
        return [Check(f"{prefix}.kind", CheckStatus.FAIL, str(exc), f'Set "type" of backends.{name}.')]
    found: list[Check] = []
    spec: LaunchSpec | None = None
    try:
        spec = adapter.launch(name, entry, config)
    except AdapterError as exc:
        found.append(Check(f"{prefix}.launch", CheckStatus.FAIL, str(exc), f"Fix backends.{name} in the config."))
    else:
        found.append(Check(f"{prefix}.launch", CheckStatus.OK, _describe(spec)))
    try:
        own = _adapter_checks(adapter, name, config, env)
    except Exception as exc:  # a crashing check must not hide the others
        own = [Check("checks", CheckStatus.FAIL, f"the {adapter.kind} checks crashed: {exc!r}", "Report this bug.")]
    for check in own:
        local = check.name.removeprefix(f"{adapter.kind}.")
        renamed = Check(f"{prefix}.{local}", check.status, check.finding, check.fix)
        found.append(excuse_own_port(renamed, entry.port, survey) if local == "port" else renamed)
    tools = tools_check(f"{prefix}.tools", entry)
    if tools is not None:
        found.append(tools)
    has_port_check = any(c.name.endswith(".port") for c in own)
    if spec is not None and spec.spawns and not has_port_check:
        generic = port_check(spec.host, spec.port, name=f"{prefix}.port")
        found.append(excuse_own_port(generic, spec.port, survey))
    return found


def tools_check(name: str, entry: BackendConfig) -> Check | None:
    """Whether the entry's local model can call tools (a warning when not); None when its files cannot tell."""
    from adapters.capabilities import NO_TOOLS_FIX
    from launcher.abilities import entry_tools, model_name

    found = entry_tools(entry)
    if found.can_call is None:
        return None
    if found.can_call:
        from adapters.model_fixes import folder_faults

        faults = folder_faults(Path(str(entry.model)).expanduser())
        if faults:
            said = "; ".join(f"{f.what}: {f.effect}" for f in faults)
            fix = f"Repair the folder with `anyclaude models fix {entry.model}` (or re-import its GGUF)."
            return Check(name, CheckStatus.WARN, f"{model_name(entry)} can call tools, but {said}", fix)
        return Check(name, CheckStatus.OK, f"{model_name(entry)} can call tools ({found.why})")
    return Check(name, CheckStatus.WARN, f"{model_name(entry)} cannot call tools ({found.why})", NO_TOOLS_FIX)


def _adapter_checks(adapter: Adapter, name: str, config: Config, env: Mapping[str, str]) -> list[Check]:
    entry = config.backends[name]
    if isinstance(adapter, AnthropicAdapter):
        # The key that counts is the one in the environment doctor was started from.
        return adapter.checks(name, entry, config, env=env)
    return adapter.checks(name, entry, config)


def _describe(spec: LaunchSpec) -> str:
    if not spec.spawns:
        return f"{spec.kind}: nothing to start; probes {spec.host}" + (f":{spec.port}" if spec.port else "")
    return f"{spec.kind}: would start {spec.argv[0]} on port {spec.port}"


def config_secrets(config: Config) -> tuple[str, ...]:
    """Every secret value the config holds: the proxy key, entry keys, secret-looking env values."""
    found = [config.api_key.get_secret_value()] if config.api_key else []
    for entry in config.backends.values():
        found += entry_secrets(entry)
    return tuple(found)
