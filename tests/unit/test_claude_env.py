"""The environment anyclaude gives Claude Code: what it adds, and that the user's own settings win."""

from __future__ import annotations

from launcher.claude import (
    API_TIMEOUT_MS,
    PLACEHOLDER_API_KEY,
    ClaudeTarget,
    claude_env,
    claude_json_path,
    compaction_env,
    not_installed_error,
)

URL = "http://127.0.0.1:49152"
LOCAL = ClaudeTarget(proxy_url=URL, api_key=None, local=True)
QUIET = {
    "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_COST_WARNINGS": "1",
}


def test_local_mode_points_at_the_proxy_with_a_placeholder_key_and_quiets_background_traffic() -> None:
    env = claude_env({"PATH": "/bin"}, LOCAL)
    assert env["PATH"] == "/bin"
    assert env["ANTHROPIC_BASE_URL"] == URL
    assert env["ANTHROPIC_API_KEY"] == PLACEHOLDER_API_KEY
    assert env["API_TIMEOUT_MS"] == str(API_TIMEOUT_MS)
    # Claude Code's own 300 s stream-idle limit would abort a prefill longer than that.
    assert env["CLAUDE_STREAM_IDLE_TIMEOUT_MS"] == str(API_TIMEOUT_MS)
    assert QUIET.items() <= env.items()
    assert "CLAUDE_CODE_MAX_OUTPUT_TOKENS" not in env  # nothing known about the model: Claude Code's default
    assert not any(name.startswith(("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_", "ANTHROPIC_SMALL")) for name in env)


def test_local_mode_sends_the_proxy_key_when_one_is_configured() -> None:
    env = claude_env({}, ClaudeTarget(URL, api_key="proxy-secret", local=True))
    assert env["ANTHROPIC_API_KEY"] == "proxy-secret"


def test_pass_through_mode_sets_only_the_base_url() -> None:
    base = {"PATH": "/bin", "ANTHROPIC_API_KEY": "sk-real"}
    env = claude_env(base, ClaudeTarget(URL, api_key="proxy-secret", local=False, context_length=200_000))
    assert env == {**base, "ANTHROPIC_BASE_URL": URL}


def test_user_settings_win_over_anyclaude_defaults() -> None:
    base = {
        "ANTHROPIC_API_KEY": "mine",
        "API_TIMEOUT_MS": "1000",
        "DISABLE_TELEMETRY": "0",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "123",
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": "150000",
    }
    env = claude_env(base, ClaudeTarget(URL, api_key="proxy-secret", local=True, context_length=131_072))
    assert base.items() <= env.items()


def test_the_base_url_always_points_at_the_proxy() -> None:
    env = claude_env({"ANTHROPIC_BASE_URL": "https://elsewhere.example"}, LOCAL)
    assert env["ANTHROPIC_BASE_URL"] == URL


def test_a_user_auth_token_leaves_the_api_key_unset() -> None:
    env = claude_env({"ANTHROPIC_AUTH_TOKEN": "bearer"}, ClaudeTarget(URL, api_key="proxy-secret", local=True))
    assert env["ANTHROPIC_AUTH_TOKEN"] == "bearer"
    assert "ANTHROPIC_API_KEY" not in env


def test_max_output_is_a_quarter_of_the_context_capped_at_32k() -> None:
    small = claude_env({}, ClaudeTarget(URL, None, True, context_length=32_768))
    large = claude_env({}, ClaudeTarget(URL, None, True, context_length=262_144))
    assert small["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "8192"
    assert large["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "32000"


def test_an_explicit_max_output_beats_the_derived_one() -> None:
    env = claude_env({}, ClaudeTarget(URL, None, True, context_length=32_768, max_output_tokens=4096))
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "4096"


def test_a_large_context_sets_the_compaction_window_directly() -> None:
    assert compaction_env(131_072, 32_000) == [("CLAUDE_CODE_AUTO_COMPACT_WINDOW", "131072")]


def test_a_small_context_moves_the_compaction_threshold_below_it() -> None:
    settings = dict(compaction_env(65_536, 16_384))
    assert settings["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "100000"
    # Claude Code compacts at floor(usable * pct / 100), usable = window - min(max output, 20k).
    threshold = (100_000 - 16_384) * float(settings["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"]) / 100
    assert abs(threshold - (65_536 - 16_384 - 13_000)) < 100


def test_a_context_too_small_for_claude_code_sets_no_compaction() -> None:
    assert compaction_env(16_384, 4096) == []


def test_compaction_follows_the_users_own_max_output() -> None:
    env = claude_env({"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "2000"}, ClaudeTarget(URL, None, True, context_length=65_536))
    assert dict(compaction_env(65_536, 2000)).items() <= env.items()


def test_claude_json_follows_claude_config_dir() -> None:
    assert str(claude_json_path({"HOME": "/h"})) == "/h/.claude.json"
    assert str(claude_json_path({"HOME": "/h", "CLAUDE_CONFIG_DIR": "/c"})) == "/c/.claude.json"


def test_not_installed_error_names_the_pinned_install_and_serve() -> None:
    error = not_installed_error()
    assert "not on PATH" in error.message
    assert error.hint is not None
    assert "@anthropic-ai/claude-code@2.1.197" in error.hint
    assert "anyclaude serve" in error.hint
