"""anyclaude installed the way people install a CLI: from a built wheel, into a venv of its own (not editable).

`.ci/run` builds the wheel and installs it into a fresh venv named by `$ANYCLAUDE_WHEEL_VENV`; without that venv
these tests are skipped with the reason. Nothing here imports the checkout: the venv's own `anyclaude` runs, from
a folder outside the checkout, without PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import anthropic
import pytest

from launcher.supervision.ports import free_port
from tests.harness import ROOT, wait_until

VENV_ENV = "ANYCLAUDE_WHEEL_VENV"


@pytest.fixture
def venv() -> Path:
    configured = os.environ.get(VENV_ENV)
    if not configured or not (Path(configured) / "bin" / "anyclaude").is_file():
        pytest.skip(f"no venv with anyclaude installed from a wheel (${VENV_ENV}; .ci/run makes one)")
    return Path(configured)


def user_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home)}


def run(venv: Path, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "anyclaude"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_wheel_holds_what_init_and_the_adapters_need(venv: Path, tmp_path: Path) -> None:
    project, env = tmp_path / "project", user_env(tmp_path)
    project.mkdir()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import launcher; print(launcher.__file__)"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv)) and str(ROOT) not in where  # the wheel's copy, not the checkout

    init = run(venv, project, env, "init")
    assert init.returncode == 0, init.stderr
    config = json.loads((project / ".anyclauderc.json").read_text())
    assert {"mlx", "mlx-legacy", "mlx-textgen", "llama-cpp", "claude"} <= set(config["backends"])  # the full example
    script = Path(config["backends"]["mlx-legacy"]["serverScript"])
    assert script.is_file() and script.is_relative_to(venv)

    dry = run(venv, project, env, "serve", "--dry-run", "--mode", "mlx-textgen")
    assert dry.returncode == 0, dry.stderr
    wrapper = next(word for word in dry.stdout.split() if word.endswith("mlx-textgen-server.sh"))
    assert Path(wrapper).is_file() and Path(wrapper).is_relative_to(venv)

    doctor = run(venv, project, env, "doctor", "--json", "--mode", "mlx-textgen")
    rows = {row["name"]: row for row in json.loads(doctor.stdout)["checks"]}
    assert rows["backend.mlx-textgen.wrapper"]["status"] == "ok", rows["backend.mlx-textgen.wrapper"]


def test_the_installed_wheel_serves_a_model_through_its_bundled_server_script(
    venv: Path, tmp_path: Path, tiny_model: Path
) -> None:
    project, env = tmp_path / "project", user_env(tmp_path)
    project.mkdir()
    assert run(venv, project, env, "init").returncode == 0
    path = project / ".anyclauderc.json"
    config = json.loads(path.read_text())
    legacy = {**config["backends"]["mlx-legacy"], "enabled": True, "model": str(tiny_model), "port": free_port()}
    config |= {"backend": "mlx-legacy", "port": free_port(), "backends": {"mlx-legacy": legacy}}
    path.write_text(json.dumps(config))
    output = tmp_path / "serve.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv / "bin" / "anyclaude"), "serve"], cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: "Serving the Anthropic API" in output.read_text() or proc.poll() is not None, 120)
        assert proc.poll() is None, output.read_text()
        client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{config['port']}", api_key="local", max_retries=0)
        reply = client.messages.create(
            model="claude-sonnet-4-6", max_tokens=4, messages=[{"role": "user", "content": "hello"}], timeout=60
        )
        assert reply.usage.output_tokens >= 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0, output.read_text()
