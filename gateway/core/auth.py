"""Admin tokens (read-only and read-write bearer tokens) and inference API keys, compared in constant time.

Tokens come from the environment (``GATEWAY_ADMIN_TOKEN``, ``GATEWAY_READ_TOKEN``) or a secret
file (``GATEWAY_TOKENS_FILE``, lines ``name role token``). A token's *name*, never its secret, is
what the history records and the logs show.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from gateway.core.errors import Forbidden, Unauthorized
from gateway.settings import MIN_SECRET_LENGTH, Settings

ROLES = ("read", "write")


@dataclass(frozen=True, slots=True)
class Token:
    """One admin token: who it is, what it may do, and its secret."""

    name: str
    role: str
    secret: str = ""

    def __repr__(self) -> str:  # never print the secret
        return f"Token(name={self.name!r}, role={self.role!r})"


def load_tokens(settings: Settings) -> list[Token]:
    """Every configured admin token; a malformed tokens file is a start-up error naming the line."""
    tokens: list[Token] = []
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        tokens.append(Token("admin", "write", settings.admin_token.get_secret_value()))
    if settings.read_token is not None and settings.read_token.get_secret_value():
        tokens.append(Token("reader", "read", settings.read_token.get_secret_value()))
    if settings.tokens_file is not None:
        tokens.extend(_read_tokens_file(settings.tokens_file))
    return tokens


def _read_tokens_file(path: Path) -> list[Token]:
    tokens = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or parts[1] not in ROLES or len(parts[2]) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"{path}:{number} (GATEWAY_TOKENS_FILE): expected 'name role token' with role read or write "
                f"and a token of at least {MIN_SECRET_LENGTH} characters"
            )
        tokens.append(Token(parts[0], parts[1], parts[2]))
    return tokens


class Authenticator:
    """Checks the ``Authorization: Bearer`` header of admin requests."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens

    def identify(self, request: Request) -> Token:
        return self.identify_header(request.headers.get("authorization", ""))

    def identify_header(self, header: str) -> Token:
        """The token an ``Authorization`` header value presents; Unauthorized if none is valid."""
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized("admin routes need an 'Authorization: Bearer <token>' header")
        if not self.tokens:
            raise Unauthorized("no admin tokens are configured; set GATEWAY_ADMIN_TOKEN")
        presented_b = presented.strip().encode()
        found: Token | None = None
        # Compare against every token, always, so timing says nothing about which one matched.
        for token in self.tokens:
            if hmac.compare_digest(presented_b, token.secret.encode()):
                found = token
        if found is None:
            raise Unauthorized("the admin token is not valid")
        return found

    def require(self, request: Request, role: str) -> Token:
        return self.require_header(request.headers.get("authorization", ""), role)

    def require_header(self, header: str, role: str) -> Token:
        """The token of ``header`` if it may act in ``role``; Unauthorized or Forbidden otherwise."""
        token = self.identify_header(header)
        if role == "write" and token.role != "write":
            raise Forbidden(f"token '{token.name}' is read-only; this action needs a read-write token")
        return token


class InferenceKeys:
    """Optional API keys for the inference routes; with none configured, inference is open."""

    def __init__(self, settings: Settings) -> None:
        self.keys = [k.get_secret_value().encode() for k in settings.inference_keys]

    def check(self, request: Request) -> None:
        self.check_headers(request.headers)

    def check_headers(self, headers: Mapping[str, str]) -> None:
        """Unauthorized unless ``headers`` (HTTP headers or gRPC metadata, looked up in lower case)
        present a valid key, when keys are configured."""
        if not self.keys:
            return
        presented = headers.get("x-api-key", "")
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            presented = presented or bearer.strip()
        if not presented:
            raise Unauthorized("inference needs an API key: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        candidate = presented.encode()
        if not any([hmac.compare_digest(candidate, key) for key in self.keys]):
            raise Unauthorized("the API key is not valid")
