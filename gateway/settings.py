"""The gateway's settings: one class, read from ``GATEWAY_*`` environment variables and ``.env``.

Defaults run the local stack on a laptop; production changes come from the environment.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Shortest admin token or inference key accepted (environment and tokens file alike).
MIN_SECRET_LENGTH = 16


def split_list(text: str) -> list[str]:
    """A comma-separated setting as a list, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _comma_list(value: Any) -> Any:
    """A comma-separated string (as the environment gives it) as a list; a list passes as it is."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return split_list(value) if isinstance(value, str) else value


# A list setting: ``a, b,,c`` in the environment (not JSON) is ["a", "b", "c"], parsed once here.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]
SecretList = Annotated[list[SecretStr], NoDecode, BeforeValidator(_comma_list)]


class Settings(BaseSettings):
    """Everything the gateway reads from its environment. Each field is ``GATEWAY_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(
        8000, ge=0, le=65535, description="Port of inference, admin and (unless metrics_port is set) /metrics."
    )
    grpc_port: int | None = Field(
        8002,
        ge=0,
        le=65535,
        description="Port of the gRPC front doors (TF Serving's PredictionService and ModelService, the Open "
        "Inference Protocol's GRPCInferenceService), on the same host address; 0 or empty: no gRPC server.",
    )
    model_store: Path = Field(
        Path("model_store"),
        description="Directory of model artifacts, <model>/<version>/; shared with the backends.",
    )
    state_file: Path | None = Field(
        None,
        description="Desired-state YAML (labels per model) applied at start; none: highest "
        "version of each model is the default.",
    )

    torchserve_url: str = Field("http://127.0.0.1:8080", description="TorchServe inference API base URL.")
    torchserve_management_url: str = Field("http://127.0.0.1:8081", description="TorchServe management API base URL.")
    torchserve_timeout_seconds: float = Field(30.0, gt=0, description="Deadline of one inference call to TorchServe.")
    torchserve_connect_timeout_seconds: float = Field(
        2.0, gt=0, description="Deadline to open a connection to TorchServe."
    )
    torchserve_max_connections: int = Field(
        100, ge=1, description="Size of the keep-alive connection pool to TorchServe."
    )

    tfserving_target: str = Field("127.0.0.1:8500", description="TF Serving gRPC address, host:port.")
    tfserving_timeout_seconds: float = Field(30.0, gt=0, description="Deadline of one inference call to TF Serving.")
    tfserving_max_message_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest gRPC message sent to or taken from TF Serving.",
    )
    tfserving_predict_client: Literal["http2", "grpc"] = Field(
        "http2",
        description="Client of TF Serving's Predict: http2, the gateway's lean HTTP/2 client on the event loop "
        "(about half the CPU per call), or grpc, grpc.aio as for every other call to TF Serving.",
    )

    database_url: str = Field(
        "sqlite:///.local/registry.db",
        description="Registry database: a SQLite file (one gateway process) or "
        "postgresql+psycopg://user@host/db shared by several replicas.",
    )
    registry_poll_seconds: float = Field(
        0.25,
        gt=0,
        description="How often a replica checks the registry for changes (fallback to PostgreSQL LISTEN/NOTIFY).",
    )
    admin_token: SecretStr | None = Field(None, description="Read-write admin token (recorded in history as 'admin').")
    read_token: SecretStr | None = Field(
        None, description="Read-only admin token (recorded as 'reader'): status, history, export."
    )
    tokens_file: Path | None = Field(
        None,
        description="More admin tokens, one per line: 'name role token' with role read or write "
        "(a mounted secret file).",
    )
    inference_keys: SecretList = Field(
        [],
        description="Comma-separated API keys; when set, inference routes need 'Authorization: Bearer "
        "<key>' or 'X-API-Key: <key>'. Unset: inference is open.",
    )
    keep_stable_versions: int = Field(
        2, ge=1, description="How many recent stable versions stay loaded so rollback is instant."
    )
    deploy_ready_timeout_seconds: float = Field(
        180.0, gt=0, description="How long a deploy waits for the backend to report the version ready."
    )
    backend_discovery_grace_seconds: float = Field(
        10.0,
        gt=0,
        description="How long a deploy's ready step takes a backend's NOT_FOUND (or a stale END without an "
        "error) for 'not yet': TF Serving finds a new version of a configured model only at its next "
        "file-system poll (--file_system_poll_wait_seconds, default 1 s) after the reload returned.",
    )
    agent_heartbeat_seconds: float = Field(
        5.0,
        gt=0,
        description="How often a backend replica's agent writes its heartbeat to the registry; keep it well "
        "under the gateway's replica_ttl_seconds.",
    )
    agent_retry_failed_seconds: float = Field(
        60.0,
        gt=0,
        description="How long an agent waits before trying again a version its replica failed to load.",
    )
    smoke_tolerance: float = Field(
        1e-4, ge=0, description="Largest absolute difference a deploy's smoke output may have."
    )
    max_artifact_bytes: int = Field(2 * 1024**3, ge=1, description="Largest artifact a deploy accepts.")
    artifact_url_prefixes: CommaList = Field(
        [],
        description="Comma-separated URL prefixes (e.g. https://models.example.com/releases/) a deploy may "
        "fetch artifacts from; empty: deploy from a URL is refused (403).",
    )
    artifact_dirs: CommaList = Field(
        [],
        description="Comma-separated directories on the gateway (e.g. a mounted volume) a deploy may take "
        "file:// artifacts from, symlinks resolved; empty: refused (403).",
    )
    artifact_url_allowed_networks: CommaList = Field(
        [],
        description="Comma-separated networks (e.g. 10.20.0.0/16, fd00::/8) an artifact URL's host may "
        "resolve to although they are loopback, link-local or private; a host name that resolves into "
        "any other such address is refused (403). A prefix of GATEWAY_ARTIFACT_URL_PREFIXES that names "
        "an IP address literally (http://127.0.0.1:9000/) allows that address without an entry here.",
    )
    artifact_fetch_timeout_seconds: float = Field(
        600.0, gt=0, description="Total deadline to download one artifact from an allow-listed URL."
    )
    artifact_fetch_idle_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a download may wait to connect, or go without receiving a byte, before it "
        "fails: a server that drips bytes is dropped long before the total deadline.",
    )
    artifact_max_unpacked_bytes: int = Field(
        4 * 1024**3,
        ge=1,
        description="Largest total size of the files a deploy's archive unpacks to, counted while "
        "unpacking (GATEWAY_MAX_ARTIFACT_BYTES counts the archive itself, compressed).",
    )
    artifact_max_members: int = Field(
        10_000, ge=1, description="Most entries (files and directories) a deploy's archive may hold."
    )
    artifact_max_path_length: int = Field(
        512, ge=16, le=4096, description="Longest path (in UTF-8 bytes) of an entry in a deploy's archive."
    )
    staging_dir: Path | None = Field(
        None,
        description="Where deploys unpack and check archives before a version is moved into the store. "
        "Must be on the model store's file system (the move is a rename); default: "
        "<model_store>/.staging, which no scan of the store reads (hidden names are never models).",
    )
    artifact_store: Literal["local", "s3"] = Field(
        "local",
        description="Where every deployed version is stored once, immutably, for backend replicas' agents to "
        "fetch: 'local' (a directory, artifact_store_dir) or 's3' (an S3-compatible bucket, artifact_s3_*; "
        "credentials from the standard AWS_* environment variables).",
    )
    artifact_store_dir: Path | None = Field(
        None, description="The local artifact store's directory; default: the model store itself (nothing is copied)."
    )
    artifact_s3_endpoint: str | None = Field(
        None, description="S3-compatible endpoint URL (e.g. http://minio:9000); default: AWS S3 itself."
    )
    artifact_s3_bucket: str | None = Field(None, description="The artifact store's bucket (artifact_store=s3).")
    artifact_s3_prefix: str = Field("", description="Key prefix of the artifact store inside its bucket.")
    torchserve_workers: int = Field(1, ge=1, description="Workers TorchServe starts per deployed version.")
    tfserving_model_base_path: str | None = Field(
        None,
        description="The model store's path as TF Serving sees it (e.g. /models in a container); "
        "default: the gateway's own model_store path.",
    )
    tfserving_config_file: Path | None = Field(
        None,
        description="TF Serving's --model_config_file, which the gateway rewrites on every change so that a "
        "restarted TF Serving loads exactly the registry's versions; default: "
        "<model_store>/.tfserving/models.config.",
    )
    torchserve_startup_file: Path | None = Field(
        None,
        description="The versions TorchServe registers at start (read by deploy/docker/stack_init.py), "
        "rewritten on every change with the stable version as default; default: "
        "<model_store>/.torchserve/models.json.",
    )
    backend_lock_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="How long a deploy or retire waits for another one changing the same backend (on any "
        "replica sharing the registry) before answering 409.",
    )
    shadow_max_inflight: int = Field(
        16, ge=1, description="Shadow requests in flight at most; more are dropped, never queued."
    )

    backend_max_inflight: int = Field(
        256, ge=1, description="Calls in flight to one backend at most; more answer 503 with Retry-After."
    )
    breaker_failures: int = Field(5, ge=1, description="Consecutive failures to reach a backend that open its circuit.")
    breaker_cooldown_seconds: float = Field(
        5.0, gt=0, description="How long an open circuit fails fast before a probe call is let through."
    )
    retry_budget_ratio: float = Field(
        0.1, ge=0, le=1, description="Retries (of calls that never reached the backend) per call, at most."
    )
    agent_stacks: CommaList = Field(
        default_factory=list,
        description="Comma-separated stacks (torchserve, tfserving) whose replicas are run by `gateway agent`s: "
        "the gateway routes them over the replicas the agents register in the registry and never calls their "
        "management APIs (their URL settings here are then unused); empty: the gateway drives one backend of "
        "each stack itself.",
    )
    replica_ttl_seconds: float = Field(
        15.0, gt=0, description="A replica whose heartbeat has not moved for this long leaves the pool."
    )
    replica_poll_seconds: float = Field(
        1.0, gt=0, description="How often the gateway reads the replica table (agent-run stacks only)."
    )
    backend_probe_seconds: float = Field(
        5.0,
        gt=0,
        description="How often each backend is probed (gateway_backend_up), and a backend that restarted "
        "gets the versions it lost loaded again.",
    )
    shutdown_drain_seconds: float = Field(
        0.0,
        ge=0,
        description="On SIGTERM, seconds readiness reports 503 before the listener closes "
        "(let the load balancer stop sending; 5-10 in Kubernetes).",
    )

    cors_origins: CommaList = Field(
        [],
        description="Comma-separated origins (e.g. https://app.example.com) browsers may call the gateway "
        "from; empty: CORS off, no cross-origin browser call is allowed.",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="Largest inference request body; larger answers 413."
    )
    # At most 512: bodies holding NaN are read by the standard library's parser, which recurses and
    # must stay well inside Python's recursion limit (1000 frames); gateway/core/jsonbody.py.
    max_json_depth: int = Field(
        64,
        ge=2,
        le=512,
        description="Deepest nesting of arrays and objects an inference JSON body may have; deeper answers 400 "
        "(a tensor has at most 64 dimensions).",
    )
    admin_max_body_bytes: int = Field(
        1024 * 1024,
        ge=1,
        description="Largest admin request body other than a deploy upload (JSON and YAML documents); larger "
        "answers 413, checked against Content-Length and counted while the body streams in, after the token.",
    )
    large_body_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="Inference bodies larger than this are decoded (JSON to tensors) off the event loop, "
        "and count against large_decodes_max.",
    )
    large_decodes_max: int = Field(
        2,
        ge=1,
        description="Large-body decodes at once at most; more answer 503 with Retry-After, never queued.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Worker processes serving one port (gateway serve): size it to the CPUs the gateway "
        "has; metrics are summed across them (one scrape counts every request once).",
    )
    max_concurrency: int = Field(
        1000,
        ge=1,
        description="Connections plus requests in progress the server takes at most (uvicorn's "
        "limit_concurrency); more answer 503.",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="When set, /metrics is served on this port only (on the same host address), not on the "
        "public port; unset: /metrics is on the public port.",
    )
    docs_enabled: bool = Field(
        True, description="Serve /docs, /redoc and /openapi.json; false turns all three off (404)."
    )
    log_level: str = Field("info", description="Log level of the gateway and uvicorn.")

    @field_validator("grpc_port", mode="before")
    @classmethod
    def _grpc_off(cls, value: object) -> object:
        return None if value in ("", 0, "0") else value

    @field_validator("admin_token", "read_token", "inference_keys")
    @classmethod
    def _long_enough(
        cls, value: SecretStr | list[SecretStr] | None, info: ValidationInfo
    ) -> SecretStr | list[SecretStr] | None:
        """Tokens and keys of at least MIN_SECRET_LENGTH characters: short ones can be guessed.
        An empty value means unset (compose passes ``GATEWAY_READ_TOKEN=`` when none is given)."""
        if value is None:
            return value
        name = info.field_name or ""
        secrets = [s.get_secret_value() for s in (value if isinstance(value, list) else [value])]
        if any(secret and len(secret) < MIN_SECRET_LENGTH for secret in secrets):
            what = "every key in" if name == "inference_keys" else "the token in"
            raise ValueError(f"{what} GATEWAY_{name.upper()} must be at least {MIN_SECRET_LENGTH} characters long")
        return value

    @field_validator("agent_stacks")
    @classmethod
    def _stacks(cls, value: list[str]) -> list[str]:
        for item in value:
            if item not in ("torchserve", "tfserving"):
                raise ValueError(f"'{item}' is not a stack: use torchserve, tfserving or both, comma-separated")
        return sorted(set(value))

    @field_validator("artifact_url_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"'{item}' is not a network such as 10.0.0.0/8 or fd00::/8") from None
        return value

    @model_validator(mode="after")
    def _artifact_store_complete(self) -> Settings:
        if self.artifact_store == "s3" and not self.artifact_s3_bucket:
            raise ValueError("GATEWAY_ARTIFACT_STORE=s3 needs GATEWAY_ARTIFACT_S3_BUCKET")
        return self

    @property
    def tfserving_config_path(self) -> Path:
        """Where TF Serving's start-up model config is kept."""
        return self.tfserving_config_file or self.model_store / ".tfserving" / "models.config"

    @property
    def staging_path(self) -> Path:
        """Where deploys unpack archives before the atomic move into the store."""
        return self.staging_dir or self.model_store / ".staging"

    @property
    def torchserve_startup_path(self) -> Path:
        """Where TorchServe's start-up registrations are kept."""
        return self.torchserve_startup_file or self.model_store / ".torchserve" / "models.json"
