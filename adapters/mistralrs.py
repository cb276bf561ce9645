"""`mistralrs`: mistral.rs's server, whichever of its two command lines the installed binary has.

New releases ship one binary, `mistralrs serve -m MODEL -p PORT --host HOST`. Older ones shipped
`mistralrs-server [--serve-ip H] --port P <plain|gguf> -m MODEL`, where global options must come
before the model selector. Which one a binary speaks is read from its `--help`.
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from adapters.base import (
    AdapterError,
    Check,
    LaunchSpec,
    local_server_spec,
    require_port,
)
from adapters.checks import binary_check, find_binary, model_memory_check, model_path_check, port_check

if TYPE_CHECKING:
    from launcher.config import BackendConfig, Config

Cli = Literal["serve", "legacy"]
NAMES = ("mistralrs", "mistralrs-server")
DEFAULT_HEALTH_PATH = "/health"
HELP_TIMEOUT_S = 5.0
INSTALL = (
    "Install mistral.rs: its install.sh from the project's GitHub page (prebuilt binaries), "
    'or `cargo install mistralrs-cli`; or set "binary" to the executable.'
)
_LEGACY_SELECTORS = frozenset({"plain", "gguf", "x-lora", "lora", "ggml", "vision-plain"})


def subcommands(help_text: str) -> set[str]:
    """The names listed under `Commands:` in clap-style help."""
    names: set[str] = set()
    listing = False
    for line in help_text.splitlines():
        if re.match(r"^\s*(Commands|Subcommands):\s*$", line):
            listing = True
        elif listing and line.strip():
            names.add(line.split()[0])
        elif listing:
            listing = False
    return names


def detect_cli(help_text: str) -> Cli:
    """`serve` for the one-binary CLI, `legacy` for `mistralrs-server`; unknown text reads as the new one."""
    commands = subcommands(help_text)
    if "serve" in commands:
        return "serve"
    if commands & _LEGACY_SELECTORS or "--serve-ip" in help_text or "Usage: mistralrs-server" in help_text:
        return "legacy"
    return "serve"


@functools.cache
def read_help(binary: str) -> str:
    """`binary --help`, once per binary: a read of its usage text, not a start of the server."""
    try:
        done = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=HELP_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout or done.stderr


def cli_of(binary: str, read: Callable[[str], str] = read_help) -> Cli:
    text = read(binary)
    if not text.strip():
        return "legacy" if Path(binary).name.startswith("mistralrs-server") else "serve"
    return detect_cli(text)


def model_args(model: str) -> list[str]:
    """`-m MODEL`, or `-m DIR -f FILE` for a .gguf file (both CLIs name a GGUF that way)."""
    path = Path(model)
    if path.suffix.lower() == ".gguf":
        return ["-m", str(path.parent), "-f", path.name]
    return ["-m", model]


def build_argv(cli: Cli, binary: str, model: str, host: str, port: int) -> list[str]:
    if cli == "serve":
        return [binary, "serve", *model_args(model), "-p", str(port), "--host", host]
    selector = "gguf" if model.lower().endswith(".gguf") else "plain"
    return [binary, "--serve-ip", host, "--port", str(port), "--token-source", "none", selector, *model_args(model)]


class MistralrsAdapter:
    kind = "mistralrs"

    def __init__(self, read: Callable[[str], str] = read_help) -> None:
        self._read = read

    def launch(self, name: str, entry: BackendConfig, config: Config) -> LaunchSpec:
        if not entry.model:
            raise AdapterError(f'backends.{name}.model is required for type "mistralrs" (a folder or .gguf file)')
        port = require_port(name, entry)
        binary = find_binary(NAMES, entry.binary)
        if binary is None:
            missing = entry.binary or "mistralrs (or mistralrs-server) on PATH"
            raise AdapterError(f'backends.{name}.binary: {missing} not found; install mistral.rs or set "binary"')
        argv = build_argv(cli_of(binary, self._read), binary, entry.model, entry.host, port)
        return local_server_spec(name, self.kind, entry, port, (*argv, *entry.args), health_path=DEFAULT_HEALTH_PATH)

    def checks(self, name: str, entry: BackendConfig, config: Config) -> list[Check]:
        return [
            binary_check(self.kind, NAMES, entry.binary, install=INSTALL),
            model_path_check(self.kind, entry.model),
            model_memory_check(entry.model, name="mistralrs.memory"),
            port_check(entry.host, entry.port, name="mistralrs.port"),
        ]
