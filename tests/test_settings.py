"""List settings are parsed once, in the Settings class, from the comma-separated environment form."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.settings import Settings

LISTS = ["GATEWAY_CORS_ORIGINS", "GATEWAY_ARTIFACT_URL_PREFIXES", "GATEWAY_ARTIFACT_DIRS"]


@pytest.mark.parametrize("variable", LISTS)
def test_a_comma_list_from_the_environment_is_trimmed_and_blanks_dropped(monkeypatch, variable):
    monkeypatch.setenv(variable, " https://a.example.com ,, https://b.example.com/x,  ,")
    value = getattr(Settings(_env_file=None), variable.removeprefix("GATEWAY_").lower())
    assert value == ["https://a.example.com", "https://b.example.com/x"]


@pytest.mark.parametrize("text", ["", " , ,"])
def test_an_empty_list_setting_is_an_empty_list(monkeypatch, text):
    for variable in [*LISTS, "GATEWAY_ARTIFACT_URL_ALLOWED_NETWORKS", "GATEWAY_INFERENCE_KEYS"]:
        monkeypatch.setenv(variable, text)
    settings = Settings(_env_file=None)
    assert settings.cors_origins == settings.artifact_dirs == settings.artifact_url_allowed_networks == []
    assert settings.inference_keys == []


def test_inference_keys_and_networks_from_the_environment(monkeypatch):
    monkeypatch.setenv("GATEWAY_INFERENCE_KEYS", "key-one-0123456789 , key-two-0123456789,")
    monkeypatch.setenv("GATEWAY_ARTIFACT_URL_ALLOWED_NETWORKS", "10.20.0.0/16, fd00::/8")
    settings = Settings(_env_file=None)
    assert [k.get_secret_value() for k in settings.inference_keys] == ["key-one-0123456789", "key-two-0123456789"]
    assert "key-one" not in repr(settings)  # still secrets
    assert settings.artifact_url_allowed_networks == ["10.20.0.0/16", "fd00::/8"]


def test_a_bad_network_in_the_list_is_named(monkeypatch):
    monkeypatch.setenv("GATEWAY_ARTIFACT_URL_ALLOWED_NETWORKS", "10.0.0.0/8, not-a-net")
    with pytest.raises(ValidationError, match=r"'not-a-net' is not a network such as 10\.0\.0\.0/8"):
        Settings(_env_file=None)


def test_a_list_passes_as_it_is():
    assert Settings(_env_file=None, cors_origins=["https://a.example.com"]).cors_origins == ["https://a.example.com"]
