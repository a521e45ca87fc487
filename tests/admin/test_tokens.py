"""Admin tokens and inference keys have a minimum length, wherever they come from."""

from __future__ import annotations

import pytest
import uvicorn
from pydantic import ValidationError

from gateway.cli import main
from gateway.core.auth import load_tokens
from gateway.settings import Settings


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("admin_token", "short-token", "GATEWAY_ADMIN_TOKEN"),
        ("read_token", "fifteen-chars-x", "GATEWAY_READ_TOKEN"),
        ("inference_keys", "a-long-enough-key-0123,short", "GATEWAY_INFERENCE_KEYS"),
    ],
)
def test_a_short_token_or_key_is_refused_naming_its_variable(field, value, variable):
    with pytest.raises(ValidationError, match=rf"{variable} must be at least 16 characters long"):
        Settings(_env_file=None, **{field: value})


def test_sixteen_characters_and_an_empty_value_are_accepted():
    settings = Settings(_env_file=None, admin_token="x" * 16, read_token="", inference_keys="k" * 16 + ", " + "j" * 20)
    assert [t.name for t in load_tokens(settings)] == ["admin"]  # empty: no read-only token


def test_a_short_token_in_the_tokens_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# name role token\nci write ci-token-0123456789\nbot read short\n")
    with pytest.raises(ValueError, match=rf"{path}:3 \(GATEWAY_TOKENS_FILE\): .* at least 16 characters"):
        load_tokens(Settings(_env_file=None, tokens_file=path))


def test_gateway_serve_refuses_a_short_token_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "secret")

    def run(self):
        raise AssertionError("the gateway started with a 6-character admin token")

    monkeypatch.setattr(uvicorn.Server, "run", run)
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "gateway serve: admin_token: Value error, the token in GATEWAY_ADMIN_TOKEN must be at least 16 characters long"
    ]
