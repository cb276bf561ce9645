"""The agent tasks' judges (tests/agent_tasks.py): a number in the answer counts only as a word of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agent_tasks import BY_NAME, Run, cause


@pytest.mark.parametrize(
    ("answer", "right"),
    [
        ("3", True),
        ("There are 3 .py files.", True),
        ("**3**", True),
        ("I read /tmp/anyclaude-agent-_tylg13d/mlx-server-glob/pkg/a.py", False),  # a digit of a folder's name
        ("Python 3.11", False),
        ("13", False),
    ],
)
def test_a_number_counts_only_as_a_word_of_its_own(answer: str, right: bool, tmp_path: Path) -> None:
    assert BY_NAME["glob"].check(tmp_path, answer) is right


def test_a_run_cut_off_while_the_model_writes_is_times_not_the_launchers(tmp_path: Path) -> None:
    cut = {"error_type": "incomplete"}
    answered = {"error_type": None}

    assert cause(BY_NAME["glob"], tmp_path, Run(exit_code=-9, timed_out=True, requests=[answered, cut])) == "time"
    assert cause(BY_NAME["glob"], tmp_path, Run(exit_code=1)) == "launcher"
    assert cause(BY_NAME["glob"], tmp_path, Run(exit_code=1, requests=[{"error_type": "overloaded"}])) == "bridge"
