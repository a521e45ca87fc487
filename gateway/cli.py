"""The ``gateway`` command line: ``gateway serve`` runs the gateway with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

from gateway.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway (settings from GATEWAY_* variables)")
    serve.add_argument("--host", help="listen address (GATEWAY_HOST)")
    serve.add_argument("--port", type=int, help="listen port (GATEWAY_PORT)")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
