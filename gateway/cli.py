"""The ``gateway`` command line.

``gateway serve`` runs the gateway. Every other command calls the admin API of a running gateway
(``--url``, default ``$GATEWAY_URL`` or http://127.0.0.1:8000) with the token from
``$GATEWAY_ADMIN_TOKEN``, else from the ``.local/admin-token`` file that ``make run`` writes.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.core import names
from gateway.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"


class CliError(Exception):
    """A failure to report in one line, with exit status 1."""


def find_token() -> str | None:
    """``$GATEWAY_ADMIN_TOKEN``, else ``.local/admin-token`` in this directory or a parent."""
    token = os.environ.get("GATEWAY_ADMIN_TOKEN")
    if token:
        return token
    for folder in (Path.cwd(), *Path.cwd().parents):
        candidate = folder / ".local" / "admin-token"
        if candidate.is_file():
            return candidate.read_text().strip()
    return None


def tar_stream(path: Path, chunk: int = 1 << 16) -> Iterator[bytes]:
    """A tar of ``path`` (a version directory, or a .mar with its sibling JSON files), packed on the fly.

    A thread writes the tar into a bounded queue while the HTTP client sends what is ready, so a
    large SavedModel is never held in memory or written to a temp file.
    """
    if path.is_dir():
        members = [(p, p.relative_to(path).as_posix()) for p in sorted(path.rglob("*")) if p.is_file()]
    elif path.suffix == ".mar" and path.is_file():
        members = [(path, path.name)] + [
            (path.parent / n, n)
            for n in ("signature.json", "sample_input.json", "sample_output.json")
            if (path.parent / n).is_file()
        ]
    else:
        raise CliError(f"{path}: not a version directory nor a .mar file")
    pipe: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)

    class Writer:
        def write(self, data: bytes) -> int:
            pipe.put(bytes(data))
            return len(data)

    def pack() -> None:
        try:
            with tarfile.open(fileobj=Writer(), mode="w|", bufsize=chunk) as tar:  # type: ignore[call-overload]
                for source, name in members:
                    tar.add(source, arcname=name, recursive=False)
            pipe.put(None)
        except BaseException as exc:  # handed to the reading side
            pipe.put(exc)

    threading.Thread(target=pack, daemon=True).start()
    while True:
        item = pipe.get()
        if item is None:
            return
        if isinstance(item, BaseException):
            raise CliError(f"packing {path} failed: {item}")
        yield item


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    token = find_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=args.url, timeout=args.timeout, headers=headers) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the gateway at {args.url}: {exc}") from None
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise CliError(f"{response.status_code}: {message}")
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


def _print(result: Any) -> None:
    print(result if isinstance(result, str) else json.dumps(result, indent=2))


def _agent(args: argparse.Namespace) -> int:
    from gateway.agent.run import main as agent_main

    return agent_main(args.stack, args.management_url, args.inference_url, args.replica_id, args.model_dir,
                      args.host_name, args.poll_seconds, args.command)  # fmt: skip


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from gateway.serving import serve

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:  # one line per setting, naming it, instead of a traceback
        raise CliError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    try:
        return serve(settings, worker=args.worker)
    except (ValueError, OSError) as exc:  # a malformed tokens file; a port that cannot be listened on
        raise CliError(str(exc)) from None


def _deploy(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("version", args.version), ("canary", args.canary)) if v is not None}
    url = f"/admin/models/{args.model}/deploy"
    if args.path.startswith(("http://", "https://", "file://")):  # the gateway fetches it (allow-listed)
        _print(_call(args, "POST", url, params={**params, "source": args.path}))
        return 0
    headers = {"Content-Type": "application/x-tar"}
    _print(_call(args, "POST", url, params=params, content=tar_stream(Path(args.path)), headers=headers))
    return 0


def _traffic(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"canary": args.canary, "percent": args.percent, "sticky_header": args.sticky_header}
    if args.guard_error_ratio is not None or args.guard_p99_ratio is not None:
        body["guard"] = {
            "max_error_ratio": args.guard_error_ratio,
            "max_p99_ratio": args.guard_p99_ratio,
            "window_seconds": args.guard_window,
            "min_requests": args.guard_min_requests,
        }
    _print(_call(args, "PUT", f"/admin/models/{args.model}/traffic", json=body))
    return 0


def _shadow(args: argparse.Namespace) -> int:
    if args.off == (args.version is not None):
        raise CliError("give either VERSION --percent P, or --off")
    body = {"version": None if args.off else args.version, "percent": 0 if args.off else args.percent}
    _print(_call(args, "PUT", f"/admin/models/{args.model}/shadow", json=body))
    return 0


def _min_ready(args: argparse.Namespace) -> int:
    if args.default == (args.n is not None):
        raise CliError("give either N (1-1000), or --default")
    _print(_call(args, "PUT", f"/admin/models/{args.model}/min-ready", json={"min_ready": args.n}))
    return 0


def _apply(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    _print(_call(args, "PUT", "/admin/state", content=text, headers={"Content-Type": "application/yaml"}))
    return 0


def _compare(args: argparse.Namespace) -> int:
    try:  # tooling beside the gateway, in the wheel but not in the serving image
        from loadgen.compare import CompareError, Options, Target, compare
    except ImportError as exc:
        raise CliError(f"gateway compare needs the load generator package 'loadgen' ({exc.name} is missing)") from None

    try:
        options = Options(
            url=args.url,
            a=Target.parse(args.a),
            b=Target.parse(args.b),
            rate=args.rate,
            seconds=args.seconds,
            warmup=args.warmup,
            protocol=args.protocol,
            out=Path(args.out),
            store=Path(args.store) if args.store else None,
            body=Path(args.body) if args.body else None,
            timeout=args.request_timeout,
            max_inflight=args.max_inflight,
            batch=args.batch,
            seed=args.seed,
            progress=not args.no_progress,
            api_key=args.api_key,
        )
        compare(options)
    except CompareError as exc:
        raise CliError(str(exc)) from None
    return 0


def _checked(check: Any) -> Any:
    """An argparse ``type`` from a ``gateway.core.names`` check: a bad name is a usage error, never a URL."""

    def convert(text: str) -> Any:
        try:
            return check(text)
        except names.InvalidName as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = check.__name__  # argparse names the type in its messages
    return convert


MODEL = _checked(names.model_name)
LABEL = _checked(names.label_name)
VERSION = _checked(names.parse_version)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("GATEWAY_URL", DEFAULT_URL), help="gateway base URL")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for an answer")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    serve = command("serve", "run the gateway (settings from GATEWAY_* variables)", _serve)
    serve.add_argument("--host", help="listen address (GATEWAY_HOST)")
    serve.add_argument("--port", type=int, help="listen port (GATEWAY_PORT)")
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of GATEWAY_WORKERS'

    p = command("agent", "keep one backend replica holding its stack's versions (beside the backend)", _agent)
    p.add_argument("--stack", choices=("torchserve", "tfserving"), required=True)
    p.add_argument("--management-url", required=True, help="the replica's management API on localhost "
                   "(TorchServe: http://127.0.0.1:8081; TF Serving: its gRPC host:port)")  # fmt: skip
    p.add_argument("--inference-url", required=True, help="where the gateway reaches the replica's inference API; "
                   "{ip} and {host} become this machine's address and host name")  # fmt: skip
    p.add_argument("--replica-id", help="unique among all replicas (default: the host name; {host}, {ip} as above)")
    p.add_argument("--model-dir", help="replica-local model storage (default: GATEWAY_MODEL_STORE)")
    p.add_argument("--host-name", help="host or pod name to report (default: $POD_NAME, else the host name)")
    p.add_argument("--poll-seconds", type=float, default=2.0, help="how often it compares (default 2)")
    p.add_argument("command", nargs="*", help="after --: the backend command to run as the agent's child "
                   "(signals forwarded; the agent exits with it, with its exit code)")  # fmt: skip

    p = command("deploy", "deploy a version: load, wait ready, smoke test, then route", _deploy)
    p.add_argument("model", type=MODEL)
    p.add_argument(
        "path",
        help="version directory (.mar or SavedModel, with its sample JSON files) or .mar, uploaded; or a URL "
        "the gateway fetches a tar of the version directory from: http(s):// under GATEWAY_ARTIFACT_URL_PREFIXES, "
        "file:// inside GATEWAY_ARTIFACT_DIRS",
    )
    p.add_argument("--version", type=VERSION, help="version number (default: the archive's, or the next)")
    p.add_argument("--canary", type=float, help="route this percentage of traffic to it")

    p = command("promote", "move stable to the canary (or VERSION)", None)
    p.add_argument("model", type=MODEL)
    p.add_argument("version", nargs="?", type=VERSION)
    p.set_defaults(
        func=lambda a: _print(_call(a, "POST", f"/admin/models/{a.model}/promote", json={"version": a.version}))
    )

    p = command("rollback", "move stable back to the previous stable version", None)
    p.add_argument("model", type=MODEL)
    p.set_defaults(func=lambda a: _print(_call(a, "POST", f"/admin/models/{a.model}/rollback")))

    p = command("traffic", "send a share of traffic to a canary version", None)
    p.add_argument("model", type=MODEL)
    p.add_argument("--canary", type=VERSION, required=True, help="canary version")
    p.add_argument("--percent", type=float, required=True)
    p.add_argument("--sticky-header", help="same header value, same version")
    p.add_argument("--guard-error-ratio", type=float, help="canary share 0 above this error ratio")
    p.add_argument("--guard-p99-ratio", type=float, help="canary share 0 when its p99 > this x stable's")
    p.add_argument("--guard-window", type=float, default=60.0, help="guard window, seconds")
    p.add_argument("--guard-min-requests", type=int, default=20, help="canary requests before judging")
    p.set_defaults(func=_traffic)

    p = command("shadow", "copy a share of live requests to a version (or --off)", _shadow)
    p.add_argument("model", type=MODEL)
    p.add_argument("version", nargs="?", type=VERSION)
    p.add_argument("--percent", type=float, default=100.0)
    p.add_argument("--off", action="store_true")

    p = command("label", "point a label at a version", None)
    p.add_argument("model", type=MODEL)
    p.add_argument("name", type=LABEL)
    p.add_argument("version", type=VERSION)
    p.set_defaults(
        func=lambda a: _print(_call(a, "PUT", f"/admin/models/{a.model}/labels/{a.name}", json={"version": a.version}))
    )

    p = command("min-ready", "replicas that must have a new version ready before it is routed", None)
    p.add_argument("model", type=MODEL)
    p.add_argument("n", nargs="?", type=int, help="1-1000 (or --default: all current replicas, at least one)")
    p.add_argument("--default", action="store_true", help="back to the default: all current replicas")
    p.set_defaults(func=_min_ready)

    p = command("retire", "unload a version no label or policy uses", None)
    p.add_argument("model", type=MODEL)
    p.add_argument("version", type=VERSION)
    p.set_defaults(func=lambda a: _print(_call(a, "POST", f"/admin/models/{a.model}/versions/{a.version}/retire")))

    p = command("status", "versions, labels, traffic, shadow results", None)
    p.add_argument("model", nargs="?", type=MODEL)
    p.set_defaults(func=lambda a: _print(_call(a, "GET", f"/admin/models/{a.model}" if a.model else "/admin/models")))

    p = command("history", "who did what, newest first", None)
    p.add_argument("model", nargs="?", type=MODEL)
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(
        func=lambda a: _print(
            _call(a, "GET", "/admin/history", params={"limit": a.limit, **({"model": a.model} if a.model else {})})
        )
    )

    command("export", "print the desired state (labels, traffic, shadow) as YAML", None).set_defaults(
        func=lambda a: _print(_call(a, "GET", "/admin/state"))
    )
    p = command("apply", "make the gateway match a desired-state file", _apply)
    p.add_argument("-f", "--file", required=True, help="YAML file, or - for standard input")

    p = command(
        "compare",
        "load two versions at the same steady rate (open loop, interleaved) and compare their latency;\n"
        "prints a table, writes OUT.json and OUT.png",
        _compare,
    )
    p.formatter_class = argparse.RawTextHelpFormatter
    p.add_argument("--a", required=True, metavar="MODEL:VERSION", help="first target, e.g. mlp:1")
    p.add_argument("--b", required=True, metavar="MODEL:VERSION", help="second target, e.g. mlp:2")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second to each target (default 50)")
    p.add_argument("--seconds", type=float, default=20.0, help="how long to measure (default 20)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load first (default 1)")
    p.add_argument("--protocol", choices=("v1", "v2", "torchserve"), default="v1", help="v1: TF Serving REST, "
                   "v2: Open Inference Protocol, torchserve: /predictions (default v1)")  # fmt: skip
    p.add_argument("--out", default="results", help="write OUT.json and OUT.png (default: results)")
    p.add_argument("--store", help="model store: send each version's sample_input.json")
    p.add_argument("--body", help="send this file's content as the body to both targets")
    p.add_argument("--timeout", dest="request_timeout", type=float, default=10.0,
                   help="seconds before a request counts as an error (default 10)")  # fmt: skip
    p.add_argument("--max-inflight", type=int, default=256, help="open connections per target (default 256)")
    p.add_argument("--batch", type=int, default=1, help="batch size of generated inputs (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of generated inputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY"),
                   help="inference API key, sent as X-API-Key (default $GATEWAY_API_KEY)")  # fmt: skip
    p.add_argument("--url", default=argparse.SUPPRESS, help="gateway base URL (as gateway --url)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except CliError as exc:
        print(f"gateway {args.command}: {exc}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
