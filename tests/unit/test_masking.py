"""Secret values in config text: found, masked for history, restored from the current file."""

from __future__ import annotations

import json

import pytest

from launcher.masking import RestoreError, dotted, mask_text, masked_view, secret_fields, unmask_text


def test_secret_fields_finds_keys_flags_and_skips_references_and_comments() -> None:
    data = {
        "apiKey": "k1",
        "// apiKey": "a comment, not a key",
        "backends": {"x": {"env": {"HF_TOKEN": "${HF_TOKEN}", "OPENAI_API_KEY": "k2"}, "args": ["--token", "k3"]}},
        "other": ["--api-key=k4", "--port", "1"],
    }
    found = {"/".join(map(str, path)): value for path, value in secret_fields(data)}
    assert found == {
        "apiKey": "k1",
        "backends/x/env/OPENAI_API_KEY": "k2",
        "backends/x/args/1": "k3",
        "other/0": "--api-key=k4",
    }


def test_mask_keeps_the_layout_and_comments_of_the_file() -> None:
    text = '{\n  "// note": "keep me",\n  "apiKey":   "s3cret-value",\n  "port": 1\n}\n'
    masked = mask_text(text)
    assert "s3cret-value" not in masked
    assert masked.startswith('{\n  "// note": "keep me",\n  "apiKey":   "«secret /apiKey»"')
    assert unmask_text(masked, text) == text


def test_a_secret_written_with_escapes_is_still_masked() -> None:
    text = '{"apiKey": "s3cret\\/value"}'  # "\/" is valid JSON for "/": the plain text replacement misses it
    masked = mask_text(text)
    assert "s3cret" not in masked
    assert json.loads(masked) == {"apiKey": "«secret /apiKey»"}


def test_restore_names_the_missing_field() -> None:
    masked = mask_text(json.dumps({"backends": {"a": {"apiKey": "k"}}}))
    with pytest.raises(RestoreError) as info:
        unmask_text(masked, json.dumps({"backends": {"a": {}}}))
    assert info.value.field == "backends.a.apiKey"
    assert dotted("/backends/a~1b/args/2") == "backends.a/b.args[2]"


def test_masked_view_hides_expanded_secrets_and_url_passwords() -> None:
    view = masked_view(
        {"env": {"HF_TOKEN": "expanded", "LEVEL": "debug"}, "baseUrl": "https://u:pw@host/v1", "args": ["--key", "1"]}
    )
    assert view == {
        "env": {"HF_TOKEN": "***", "LEVEL": "debug"},
        "baseUrl": "https://u:***@host/v1",
        "args": ["--key", "1"],
    }
