"""A model that cannot call tools is said to be one: on the start line, in `status` and in `doctor`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from launcher.supervision.ports import free_port
from tests.harness import anyclaude, start_serve, wait_until

# SmolLM2-135M-Instruct's own template: it never reads `tools`, so tool definitions never reach the model.
NO_TOOLS_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def without_tools(tiny_model: Path, tmp_path: Path) -> Path:
    model = tmp_path / "NoTools-Model"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": NO_TOOLS_TEMPLATE}))
    return model


def test_a_model_that_cannot_call_tools_is_named_where_the_user_looks(tiny_model: Path, tmp_path: Path) -> None:
    model = without_tools(tiny_model, tmp_path)
    s = start_serve(tmp_path, entry={"command": None, "type": "mlx-server", "model": str(model)}, name="mlx")
    try:
        s.wait_state("READY", timeout=120)
        wait_until(lambda: "Serving the Anthropic API" in s.text(), 10)
        assert "! NoTools-Model cannot call tools (its chat template drops tool definitions)" in s.text()

        status = anyclaude("status", "--json")
        row = next(b for b in json.loads(status.stdout)["backends"] if b["name"] == "mlx")
        assert row["can_call_tools"] is False and "drops tool definitions" in row["tools"]
        table = anyclaude("status")
        assert "mlx cannot call tools: its chat template drops tool definitions" in " ".join(table.stdout.split())

        config = str(tmp_path / ".anyclauderc.json")
        doctor = anyclaude("doctor", "--json", "--config", config, env={"ANYCLAUDE_HOME": os.environ["ANYCLAUDE_HOME"]})
        rows = {r["name"]: r for r in json.loads(doctor.stdout)["checks"]}
        assert rows["backend.mlx.tools"]["status"] == "warn", rows["backend.mlx.tools"]
        assert "cannot read files" in rows["backend.mlx.tools"]["fix"]
    finally:
        s.close()


def test_a_model_whose_template_renders_tools_passes(tiny_model: Path, tmp_path: Path) -> None:
    config = tmp_path / ".anyclauderc.json"
    entry = {"type": "mlx-server", "model": str(tiny_model), "port": free_port()}
    config.write_text(json.dumps({"backend": "mlx", "port": free_port(), "backends": {"mlx": entry}}))
    doctor = anyclaude("doctor", "--json", "--config", str(config))
    rows = {r["name"]: r for r in json.loads(doctor.stdout)["checks"]}
    assert rows["backend.mlx.tools"]["status"] == "ok" and "can call tools" in rows["backend.mlx.tools"]["finding"]
