"""Secrets stay out of logs: argv values of secret flags, KEY=value pairs, known secrets, Bearer tokens."""

from __future__ import annotations

import pytest

from launcher.redact import MASK, is_secret_name, redact_argv, redact_text


@pytest.mark.parametrize(
    ("argv", "secrets", "expected"),
    [
        (
            ["mlx_lm.server", "--api-key", "sk-abc123", "--port", "8080"],
            (),
            ["mlx_lm.server", "--api-key", MASK, "--port", "8080"],
        ),
        (["srv", "--token=hf_abcdef"], (), ["srv", f"--token={MASK}"]),
        (["srv", "--api-key=sk-xyz"], (), ["srv", f"--api-key={MASK}"]),
        (["srv", "-api_key=sk-xyz"], (), ["srv", f"-api_key={MASK}"]),
        (["env", "OPENAI_API_KEY=sk-xyz", "PATH=/bin"], (), ["env", f"OPENAI_API_KEY={MASK}", "PATH=/bin"]),
        (["HF_TOKEN=hf_123456"], (), [f"HF_TOKEN={MASK}"]),
        (
            ["srv", "--hf-token", "hf_1", "--password", "pw", "--secret", "s"],
            (),
            ["srv", "--hf-token", MASK, "--password", MASK, "--secret", MASK],
        ),
        (
            ["srv", "--url=http://h/?key=sk-known-1234&x=1"],
            ("sk-known-1234",),
            ["srv", f"--url=http://h/?key={MASK}&x=1"],
        ),
        (["srv", "-H", "Authorization: Bearer abc.def"], (), ["srv", "-H", f"Authorization: Bearer {MASK}"]),
        (["srv", "--port", "8080", "--model", "/m/q"], ("sk-unused",), ["srv", "--port", "8080", "--model", "/m/q"]),
        (["srv", "--api-key"], (), ["srv", "--api-key"]),
    ],
)
def test_redact_argv(argv: list[str], secrets: tuple[str, ...], expected: list[str]) -> None:
    assert redact_argv(argv, secrets) == expected


def test_redact_argv_leaves_its_input_alone() -> None:
    argv = ["srv", "--api-key", "sk-abc123"]
    redact_argv(argv)
    assert argv == ["srv", "--api-key", "sk-abc123"]


def test_redact_argv_accepts_a_tuple() -> None:
    assert redact_argv(("a", "--token", "t0k3n")) == ["a", "--token", MASK]


def test_flags_that_merely_contain_token_keep_their_values() -> None:
    argv = ["srv", "--max-tokens", "512", "--token-source", "none", "--tokenizer", "/t"]
    assert redact_argv(argv) == argv


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def", f"Authorization: Bearer {MASK}"),
        ("authorization: bearer eyJh.eyJz-_x~+/=", f"authorization: bearer {MASK}"),
        ("BEARER tok and more", f"BEARER {MASK} and more"),
        ("no secrets here", "no secrets here"),
    ],
)
def test_redact_text_bearer(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redact_text_known_secrets_everywhere() -> None:
    text = "key sk-live-9999 again sk-live-9999."
    assert redact_text(text, ["sk-live-9999"]) == f"key {MASK} again {MASK}."


def test_longer_secret_is_masked_before_its_prefix() -> None:
    assert redact_text("x sk-abcdef y", ["sk-abc", "sk-abcdef"]) == f"x {MASK} y"


def test_short_and_empty_secrets_are_ignored() -> None:
    # Masking "ab" or "" would shred ordinary text.
    assert redact_text("abc cab", ["ab", ""]) == "abc cab"
    assert redact_text("abcd", ["abcd"]) == MASK


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY",
        "HF_TOKEN",
        "apiKey",
        "api_key",
        "APIKEY",
        "Authorization",
        "x-api-key",
        "DB_PASSWORD",
        "CLIENT_SECRET",
        "token",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["PATH", "HOME", "port", "model", "TOKENIZERS_PARALLELISM", "max_tokens", "KEYBOARD", "monkey"]
)
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)
