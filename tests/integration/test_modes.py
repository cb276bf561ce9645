"""Choosing a mode the config does not (or no longer) offer: explicit beats silent."""

from __future__ import annotations

from pathlib import Path

from tests.harness import anyclaude, start_serve, wait_until


def test_an_unknown_mode_without_a_config_file_is_named_with_the_known_ones(tmp_path: Path) -> None:
    # No .anyclauderc.json in HOME or the working folder (the repository root has only the example).
    for how, env in (("--mode nonexistent", {}), ("$ANYCLAUDE_MODE nonexistent", {"ANYCLAUDE_MODE": "nonexistent"})):
        args = ("serve", "--mode", "nonexistent") if how.startswith("--") else ("serve",)
        result = anyclaude(*args, env={"HOME": str(tmp_path), **env}, timeout=30)
        assert result.returncode == 2, result.stderr
        assert f"{how}: there is no backend named 'nonexistent'" in result.stderr
        assert "Known modes: mlx" in result.stderr
        assert "No .anyclauderc.json found" not in result.stderr


def test_a_mode_marked_disabled_starts_and_says_so(tmp_path: Path) -> None:
    s = start_serve(tmp_path, entry={"enabled": False})
    try:
        s.wait_state("READY", timeout=30)
        wait_until(lambda: 'fault is marked "enabled": false' in s.text(), 10, what="the note on stderr")
        assert "starting it because it was chosen as the mode" in s.text()
    finally:
        s.close()
