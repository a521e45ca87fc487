"""An app with its gRPC server on a free port, and the fake backends (the lifespan starts the server
on the app's own event loop, as in production)."""

from __future__ import annotations

import socket

import grpc
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def grpc_settings(settings):
    return settings.model_copy(update={"grpc_port": free_port()})


@pytest.fixture
def grpc_client(grpc_settings, fake_backends):
    """(REST test client, gRPC address) of one running app."""
    with TestClient(create_app(grpc_settings, backends=fake_backends)) as client:
        yield client, f"127.0.0.1:{grpc_settings.grpc_port}"


@pytest.fixture
def channel(grpc_client):
    with grpc.insecure_channel(grpc_client[1]) as chan:
        yield chan


def unary(channel: grpc.Channel, method: str, request, response_type, **kwargs):
    """Call ``method`` (``/package.Service/Method``) with the gateway's own lean messages."""
    call = channel.unary_unary(
        method, request_serializer=type(request).SerializeToString, response_deserializer=response_type.FromString
    )
    return call(request, **kwargs)
