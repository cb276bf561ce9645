"""The first request in a second folder: how much of Claude Code's prompt the cache reuses, with and without
the per-folder sections moved out of the system prompt (`--exclude-dynamic-system-prompt-sections`).

Claude Code writes the working directory, git status and date into its system prompt, ahead of the tools and
the conversation; a cache keyed on the prompt's prefix then shares only what comes before them with another
folder. For each setting: a fresh anyclaude home, real Claude Code (`anyclaude -- -p hi`) in folder A, then in
folder B; the table gives B's first request: prompt tokens, tokens served from the cache, and time to the first
token. Our MLX server, SmolLM2-135M (the demo model; its template drops tool schemas, so the prompt is Claude Code's
system prompt and first message), Claude Code's own system prompt.

    python bench/new_folder.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher.supervision.ports import free_port
from tests.agent_tasks import run_claude
from tests.smollm2 import smollm2_dir


def second_folder(model: Path, work: Path, exclude: bool) -> dict[str, float]:
    claude = {"tools": "all", "systemPrompt": "default", "excludeDynamicSections": exclude, "smallModel": False}
    entry = {"type": "mlx-server", "port": free_port(), "model": str(model), "temperature": 0.0, "claude": claude}
    entry |= {"contextLength": 8192, "maxOutputTokens": 16}
    config = work / "config.json"
    config.write_text(json.dumps({"port": free_port(), "backend": "mlx", "backends": {"mlx": entry}}))
    home, ahome = work / "home", work / "anyclaude"
    home.mkdir()
    for name in ("project-a", "project-b"):
        (work / name).mkdir()
        run = run_claude(config, work / name, "hi", home=home, anyclaude_home=ahome, extra=("--max-turns", "1"))
    first = run.requests[0]
    cached = first["cached_tokens"] or 0  # the request log's input_tokens are the ones not served from the cache
    return {"prompt": first["input_tokens"] + cached, "cached": cached, "ttft": first["ttft"] or 0.0}


def main() -> None:
    model = smollm2_dir()
    rows = []
    for exclude in (False, True):
        with tempfile.TemporaryDirectory(prefix="anyclaude-folders-") as scratch:
            rows.append((exclude, second_folder(model, Path(scratch), exclude)))
    print("Claude Code's first request in a second folder (SmolLM2-135M, our MLX server)")
    print(f"{'per-folder sections':<28} {'prompt':>7} {'cached':>7} {'reused':>7} {'TTFT s':>7}")
    for exclude, r in rows:
        where = "moved to the first message" if exclude else "in the system prompt"
        share = r["cached"] / r["prompt"] if r["prompt"] else 0.0
        print(f"{where:<28} {r['prompt']:>7.0f} {r['cached']:>7.0f} {share:>7.0%} {r['ttft']:>7.2f}")


if __name__ == "__main__":
    main()
