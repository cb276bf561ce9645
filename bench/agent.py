"""Claude Code's agent loop on a real tool-calling model, through anyclaude, on two backends side by side.

Each task (tests/agent_tasks.py: read, grep, glob, edit, write, bash, two-step, a plain question) is run by the real
Claude Code CLI (`anyclaude -- -p … --output-format stream-json`) in a fresh folder and judged from the file
system and the answer. Per task: success (the outcome right and Claude Code finished without an error), whether
the outcome alone is right (a model that makes the fix, then goes round until the turn limit, has it), turns, tool
calls made / answered with an error / recovered from text / failed to parse, wall time, prompt and cached tokens
per request (from the request log), and for a failure whose it was: `launcher` (anyclaude or Claude Code did not
finish), `bridge` (a request failed in the proxy), `parse` (a call the model wrote could not be read), `time` (the
run outlasted its limit while the model was still writing) or `model` (the model chose wrong).

Backends, same model folder and template, greedy decoding: our MLX server (`mlx-server`) and `mlx_lm.server`
(the `mlx-lm` kind); both behind the same proxy and the same Claude Code settings (anyclaude's defaults for a
small model: Read, Edit, Bash and the compact system prompt). Tasks alternate between the backends, so drift on
a shared machine hits both alike. Before the tasks, the one-line question is timed cold (a fresh anyclaude home:
model load and the whole prompt) and warm (run again: the prompt cache's copy on disk) on our server.

    python bench/agent.py                       # Qwen2.5-Coder-1.5B (tests/qwen_coder.py fetches it), all tasks
    python bench/agent.py --only read,edit --kinds mlx-server
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher.supervision.ports import free_port
from tests.agent_tasks import ROOT, TASKS, Run, Task, cause, prepare, run_claude
from tests.harness import wait_until

KINDS = ("mlx-server", "mlx-lm")


def config_for(kind: str, model: Path, folder: Path, claude: dict[str, str] | None = None) -> Path:
    entry: dict[str, Any] = {"type": kind, "port": free_port(), "model": str(model), "startupTimeout": 900_000}
    entry["contextLength"] = 32768
    entry["maxOutputTokens"] = 1024  # a reply that rambles ends within minutes on a CPU (as in the tests)
    entry["claude"] = claude or {}
    if kind == "mlx-server":
        entry["temperature"] = 0.0
    path = folder / f"{kind}.json"
    path.write_text(json.dumps({"port": free_port(), "backend": "local", "backends": {"local": entry}}))
    return path


class Serve:
    """`anyclaude serve` for one backend, started once; `anyclaude -- -p` runs find it and reuse it."""

    def __init__(self, config: Path, home: Path) -> None:
        env = {**os.environ, "ANYCLAUDE_HOME": str(home), "PYTHONPATH": str(ROOT)}
        home.mkdir(parents=True, exist_ok=True)
        self.log = (home / "serve.out").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "launcher", "serve", "--config", str(config)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.home = home
        wait_until(lambda: "Serving the Anthropic API" in (home / "serve.out").read_text(), 1200)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def one_line_timing(model: Path, work: Path) -> tuple[float, float, str, str]:
    """Cold and warm wall time of `anyclaude -- -p "What is 2 + 3?"` on our server, each starting the backend."""
    config = config_for("mlx-server", model, work)
    folder = prepare(TASKS[-1], work / "question")
    home, ahome = work / "home-q", work / "anyclaude-q"
    home.mkdir()
    cold = run_claude(config, folder, TASKS[-1].prompt, home=home, anyclaude_home=ahome)
    warm = run_claude(config, folder, TASKS[-1].prompt, home=home, anyclaude_home=ahome)
    return cold.wall_s, warm.wall_s, cold.answer.strip()[:20], warm.answer.strip()[:20]


def fmt_tokens(run: Run) -> str:
    return " ".join(f"{r.get('input_tokens') or 0}/{r.get('cached_tokens') or 0}" for r in run.requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: the Qwen2.5-Coder-1.5B fixture)")
    parser.add_argument("--only", help="comma-separated task names")
    parser.add_argument("--kinds", default=",".join(KINDS), help="backend kinds, comma-separated")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold/warm one-line question")
    parser.add_argument("--tools", help='claude.tools for both backends (default "auto": Read,Edit,Bash here)')
    parser.add_argument("--system-prompt", help='claude.systemPrompt (default "auto": compact here)')
    parser.add_argument("--task-timeout", type=float, default=600, help="seconds a task may take (default 600)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "agent.json")
    args = parser.parse_args()
    if args.model is None:
        from tests.qwen_coder import qwen_coder_dir

        args.model = qwen_coder_dir()
    tasks = [t for t in TASKS if not args.only or t.name in args.only.split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="anyclaude-agent-") as scratch:
        work = Path(scratch)
        if not args.no_cold:
            cold, warm, cold_answer, warm_answer = one_line_timing(args.model, work)
            print(
                f"one-line question, our server: cold {cold:.1f} s ({cold_answer!r}), warm {warm:.1f} s "
                f"({warm_answer!r})",
                flush=True,
            )
        claude = {"tools": args.tools or "auto", "systemPrompt": args.system_prompt or "auto"}
        serves = {kind: Serve(config_for(kind, args.model, work, claude), work / f"anyclaude-{kind}") for kind in kinds}
        try:
            for task in tasks:
                for kind in kinds:
                    results.append(run_task(task, kind, serves[kind], work, args.task_timeout))
                    print_row(results[-1])
        finally:
            for serve in serves.values():
                serve.stop()
    summarize(results, kinds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


def run_task(task: Task, kind: str, serve: Serve, work: Path, timeout: float) -> dict[str, Any]:
    folder = prepare(task, work / f"{kind}-{task.name}")
    home = work / f"home-{kind}-{task.name}"
    home.mkdir()
    config = Path(serve.proc.args[-1])
    run = run_claude(config, folder, task.prompt, home=home, anyclaude_home=serve.home, timeout=timeout)
    why = cause(task, folder, run)
    return {
        "task": task.name,
        "kind": kind,
        "ok": why is None,
        "done": task.check(folder, run.answer),  # the outcome holds, even if Claude Code then hit its turn limit
        "cause": why,
        "turns": run.turns,
        "calls": run.calls_made,
        "calls_error": run.calls_failed,
        "text_calls": run.text_calls,
        "parse_failed": run.parse_failed,
        "wall_s": round(run.wall_s, 1),
        "tokens": fmt_tokens(run),
        "answer": run.answer.strip(),  # whole in the JSON; the table shows its start
        "tool_calls": [{k: c.get(k) for k in ("name", "input", "error")} for c in run.calls],  # to read a failure
    }


def print_row(r: dict[str, Any]) -> None:
    print(
        f"{r['task']:<12} {r['kind']:<10} {'ok' if r['ok'] else 'FAIL':<4} {'yes' if r['done'] else 'no':<4} "
        f"{r['cause'] or '':<8} "
        f"{r['turns']:>5} {r['calls']:>5} {r['calls_error']:>6} {r['text_calls']:>5} {r['parse_failed']:>6} "
        f"{r['wall_s']:>7.1f}  {r['tokens']}  {r['answer'][:60]!r}",
        flush=True,
    )


def summarize(results: list[dict[str, Any]], kinds: list[str]) -> None:
    print()
    print(
        f"{'task':<12} {'backend':<10} {'ok':<4} {'done':<4} {'cause':<8} turns calls errors text parse  wall s  "
        "prompt/cached tokens per request  answer"
    )
    for r in results:
        print_row(r)
    print()
    for kind in kinds:
        mine = [r for r in results if r["kind"] == kind]
        ok = sum(r["ok"] for r in mine)
        done = sum(r["done"] for r in mine)
        causes = {c: sum(r["cause"] == c for r in mine) for c in ("launcher", "bridge", "parse", "time", "model")}
        median = sorted(r["wall_s"] for r in mine)[len(mine) // 2] if mine else 0.0
        print(
            f"{kind:<10} {ok}/{len(mine)} tasks succeeded ({done} with the outcome right); failures by cause "
            f"{causes}; median wall {median:.1f} s"
        )


if __name__ == "__main__":
    main()
