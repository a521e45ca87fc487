"""The local stack for machines without Docker: real TorchServe, the TF Serving-compatible
development server, and the gateway, as child processes of one launcher.

``python deploy/localstack.py run`` (what ``make run`` calls) starts all three, waits until each is
ready, prints where each listens and a curl that works, and on Ctrl-C (or SIGTERM) stops every
process it started. While it runs it keeps the stack up as compose's ``restart: unless-stopped``
does: a process that exits is started again, after a delay that doubles with each quick failure
(see ``RestartPolicy``), through the same start-up path as the first start, so that a dead backend
is something to watch the gateway handle rather than the end of the session. The test suite starts
the same stack on free ports through ``LocalStack``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Ports:
    """Where each service listens; the defaults are the project's documented ports."""

    gateway: int = 8000
    ts_inference: int = 8080
    ts_management: int = 8081
    ts_metrics: int = 8082
    tf_grpc: int = 8500
    tf_rest: int = 8501
    # TorchServe also opens its own gRPC API; two stacks on one machine must not share it.
    ts_grpc_inference: int = 7070
    ts_grpc_management: int = 7071
    #: The gateway's gRPC front doors (GATEWAY_GRPC_PORT).
    gateway_grpc: int = 8002

    @classmethod
    def free(cls) -> Ports:
        """Nine distinct free ports: held open together while chosen (one at a time, two could be the
        same, and a server would then fail to bind its second address)."""
        with contextlib.ExitStack() as held:
            sockets = [held.enter_context(socket.socket()) for _ in range(9)]
            for sock in sockets:
                sock.bind(("127.0.0.1", 0))
            return cls(*(int(sock.getsockname()[1]) for sock in sockets))


@dataclass
class StoredVersion:
    model: str
    version: int
    backend: str
    path: Path


def _load_stack_init() -> Any:
    """deploy/docker/stack_init.py, the containers' store helper: one set of store rules for both."""
    spec = importlib.util.spec_from_file_location("stack_init", DEPLOY / "docker" / "stack_init.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stack_init = _load_stack_init()


def scan_store(store: Path) -> list[StoredVersion]:
    """The versions in the model store, by artifact: ``*.mar`` -> torchserve, SavedModel -> tfserving."""
    return [StoredVersion(m, v, b, store / m / str(v)) for m, v, b in stack_init.scan(store)]


def torchserve_link(store: Path, model: str, version: int) -> str:
    """Link ``<store>/<model>.<version>.mar`` to the version's archive and return the link's name
    (TorchServe 0.12 looks archives up by file name at the top of its store only)."""
    name: str = stack_init.link(store, model, version)
    return name


class StartError(RuntimeError):
    """A service did not become ready; the message carries the end of its log."""


def _http(method: str, url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Interrupts:
    """SIGINT and SIGTERM as ``KeyboardInterrupt`` in the launcher, held back while a child process
    is being started: a signal that landed between ``fork`` and recording the child's pid would
    leave a process nobody stops. Until ``install`` (in tests, say) signals keep their handlers."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False
        self.stopping = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stopping:
            return  # a second Ctrl-C while stopping: the stop is already under way
        if self.depth:
            self.pending = True
            return
        self.stopping = True
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Delay an interrupt that arrives inside the block to the block's end."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending and not self.stopping:
                self.stopping = True
                raise KeyboardInterrupt


INTERRUPTS = Interrupts()


@dataclass
class Service:
    """One child process with its own process group and log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    cwd: Path = ROOT

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # A new session: Ctrl-C in the terminal reaches only the launcher, which then stops each
        # group in order, and TorchServe's Java frontend and Python workers go with their group.
        with INTERRUPTS.held():
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.started_at = time.monotonic()
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.proc.poll() is not None and not _group_alive(pgid):
                    break
                time.sleep(0.1)
            else:
                continue
            break
        try:  # the leader may be gone while a child (a worker) lingers: reap the group
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=5)
        self.proc = None

    def wait_until(self, check: Callable[[], bool], deadline_s: float, what: str) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartError(f"{self.name} exited while {what}; its log:\n{self.log_tail()}")
            try:
                if check():
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.25)
        raise StartError(f"{self.name}: not {what} within {deadline_s:.0f}s; its log:\n{self.log_tail()}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class LocalStack:
    """TorchServe, the TF Serving-compatible server and the gateway, started and stopped together."""

    def __init__(
        self,
        store: Path,
        workdir: Path,
        ports: Ports | None = None,
        *,
        python: str = sys.executable,
        gateway_env: dict[str, str] | None = None,
        start_gateway: bool = True,
    ) -> None:
        self.store = store.resolve()
        self.workdir = workdir.resolve()
        self.ports = ports or Ports()
        self.python = python
        self.gateway_env = gateway_env or {}
        self.start_gateway = start_gateway
        self.versions = scan_store(self.store)
        self.services: dict[str, Service] = {}

    # --- addresses -------------------------------------------------------------------------
    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def gateway_grpc_target(self) -> str:
        """The gateway's gRPC front doors, host:port."""
        return f"127.0.0.1:{self.ports.gateway_grpc}"

    @property
    def torchserve_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.ts_inference}"

    @property
    def torchserve_management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.ts_management}"

    @property
    def torchserve_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.ts_metrics}"

    @property
    def tfserving_target(self) -> str:
        return f"127.0.0.1:{self.ports.tf_grpc}"

    @property
    def tfserving_rest_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.tf_rest}"

    # --- configuration files ---------------------------------------------------------------
    def write_torchserve_config(self) -> Path:
        text = (DEPLOY / "torchserve" / "config.properties").read_text()
        for default, port in ((8080, self.ports.ts_inference), (8081, self.ports.ts_management),
                              (8082, self.ports.ts_metrics)):  # fmt: skip
            text = text.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
        text += (
            f"\nmodel_store={self.store}\n"
            f"grpc_inference_port={self.ports.ts_grpc_inference}\n"
            f"grpc_management_port={self.ports.ts_grpc_management}\n"
        )
        path = self.workdir / "torchserve" / "config.properties"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    @property
    def tfserving_config_file(self) -> Path:
        """TF Serving's start-up model config: the gateway keeps it equal to its registry."""
        return self.store / ".tfserving" / "models.config"

    @property
    def torchserve_startup_file(self) -> Path:
        """TorchServe's start-up registrations: the gateway keeps them equal to its registry."""
        return self.store / ".torchserve" / "models.json"

    def write_startup_files(self) -> None:
        """Write both start-up files from the store's directories if they do not exist yet, as the
        containers' ``model-init`` does; once the gateway runs, it owns them."""
        versions = [(v.model, v.version, v.backend) for v in self.versions]
        if not self.tfserving_config_file.exists():
            stack_init.write_atomically(
                self.tfserving_config_file, stack_init.tfserving_config(versions, str(self.store))
            )
        if not self.torchserve_startup_file.exists():
            stack_init.write_atomically(self.torchserve_startup_file, stack_init.torchserve_startup(versions))

    def tfserving_startup_versions(self) -> list[tuple[str, int]]:
        """``(model, version)`` that TF Serving's start-up config names."""
        from google.protobuf import text_format

        from gateway.backends.tfserving.protos import serving_pb2 as pb

        config = pb.ReloadConfigRequest().config
        text_format.Parse(self.tfserving_config_file.read_text(), config)
        return [
            (entry.name, version)
            for entry in config.model_config_list.config
            for version in entry.model_version_policy.specific.versions
        ]

    # --- services --------------------------------------------------------------------------
    def _torchserve(self) -> Service:
        config = self.write_torchserve_config()
        logs = self.workdir / "torchserve"
        tmp = logs / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        bin_dir = str(Path(self.python).parent)
        return Service(
            "torchserve",
            [str(Path(bin_dir) / "torchserve"), "--start", "--foreground", "--ncs",
             "--ts-config", str(config), "--model-store", str(self.store),
             "--disable-token-auth", "--enable-model-api"],
            logs / "torchserve.log",
            env={
                "LOG_LOCATION": str(logs),
                "METRICS_LOCATION": str(logs),
                # The frontend's workers run with the launcher's interpreter; java comes from PATH.
                "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                "TS_DISABLE_SYSTEM_METRICS": "true",
                # TorchServe keeps its pid file and worker sockets in TMPDIR: one per stack, so a
                # test run and `make run` on one machine do not trip over each other.
                "TMPDIR": str(tmp),
                "TEMP": str(tmp),
            },
        )  # fmt: skip

    def _tfserving(self) -> Service:
        conf = self.workdir / "tfserving"
        conf.mkdir(parents=True, exist_ok=True)
        self.write_startup_files()
        return Service(
            "tfserving",
            [self.python, str(DEPLOY / "tfserving_dev" / "server.py"),
             f"--port={self.ports.tf_grpc}", f"--rest_api_port={self.ports.tf_rest}",
             f"--model_config_file={self.tfserving_config_file}",
             f"--monitoring_config_file={DEPLOY / 'tfserving' / 'monitoring.config'}",
             "--file_system_poll_wait_seconds=1"],
            conf / "tfserving.log",
            env={"TF_CPP_MIN_LOG_LEVEL": "2"},
        )  # fmt: skip

    def gateway_environment(self) -> dict[str, str]:
        token, _ = admin_token(self.workdir)
        return {
            "GATEWAY_DATABASE_URL": f"sqlite:///{self.workdir / 'registry.db'}",
            "GATEWAY_ADMIN_TOKEN": token,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.ports.gateway),
            "GATEWAY_GRPC_PORT": str(self.ports.gateway_grpc),
            "GATEWAY_MODEL_STORE": str(self.store),
            "GATEWAY_TORCHSERVE_URL": self.torchserve_url,
            "GATEWAY_TORCHSERVE_MANAGEMENT_URL": self.torchserve_management_url,
            "GATEWAY_TFSERVING_TARGET": self.tfserving_target,
            "GATEWAY_STATE_FILE": str(DEPLOY / "examples" / "state.yaml"),
            **self.gateway_env,
        }

    def _gateway(self, port: int | None = None, name: str = "gateway", env: dict[str, str] | None = None) -> Service:
        given = env or {}
        env = {**self.gateway_environment(), **given}
        if port is not None:
            env["GATEWAY_PORT"] = str(port)
            if port != self.ports.gateway and "GATEWAY_GRPC_PORT" not in given:
                env["GATEWAY_GRPC_PORT"] = "0"  # another replica: the gRPC port is the first one's
        return Service(name, [self.python, "-m", "gateway.cli", "serve"], self.workdir / name / "gateway.log", env=env)

    def start_gateway_process(
        self,
        port: int | None = None,
        name: str = "gateway",
        env: dict[str, str] | None = None,
        tree: Path | None = None,
    ) -> Service:
        """Start (another) gateway process on ``port`` and wait until it is ready.

        Tests use it to restart the gateway, or to run a second replica on the same registry;
        ``scripts/bench_revisions.py`` runs the gateway code of another checkout (``tree``) so.
        """
        service = self._gateway(port, name, env)
        if tree is not None:
            service.cwd = tree
            service.env["PYTHONPATH"] = str(tree)
        self.services[name] = service
        service.start()
        self._wait_gateway_ready(service, port)
        return service

    def _wait_gateway_ready(self, service: Service, port: int | None = None) -> None:
        url = f"http://127.0.0.1:{port or self.ports.gateway}/v2/health/ready"
        service.wait_until(lambda: _http("GET", url)[0] == 200, 60, "ready")

    # --- readiness -------------------------------------------------------------------------
    def _register_torchserve_versions(self, ts: Service) -> None:
        self.write_startup_files()
        failed = stack_init.register(self.store, self.torchserve_management_url, 1, 180.0, self.torchserve_startup_file)
        if failed:
            raise StartError(f"torchserve: registering {', '.join(failed)} failed\n{ts.log_tail()}")

    def _tf_available(self) -> bool:
        for model, version in self.tfserving_startup_versions():
            status, body = _http("GET", f"{self.tfserving_rest_url}/v1/models/{model}/versions/{version}")
            if status != 200:
                return False
            states = json.loads(body).get("model_version_status", [])
            if not any(s.get("state") == "AVAILABLE" for s in states):
                return False
        return True

    def start(self, timeout: float = 240.0) -> None:
        """Start every service and wait for each to be ready; on failure stop what started."""
        try:
            ts, tf = self._torchserve(), self._tfserving()
            self.services = {"torchserve": ts, "tfserving": tf}
            ts.start()
            tf.start()
            ts.wait_until(lambda: _http("GET", f"{self.torchserve_url}/ping")[0] == 200,
                          timeout, "answering /ping")  # fmt: skip
            self._register_torchserve_versions(ts)
            tf.wait_until(self._tf_available, timeout, "serving every SavedModel version")
            if self.start_gateway:
                self.start_gateway_process()
        except BaseException:
            self.stop()
            raise

    def _replace(self, name: str, service: Service) -> Service:
        """Stop the running ``name`` service, if any, and start ``service`` in its place."""
        old = self.services.get(name)
        if old is not None:
            old.stop()
        self.services[name] = service
        service.start()
        return service

    def start_backend(self, kind: str, timeout: float = 240.0) -> Service:
        """Start one backend of this stack on its own, with nothing registered or loaded (a
        ``gateway agent`` beside it does that, issue 15), and wait until it answers."""
        if kind == "torchserve":
            service = self._replace("torchserve", self._torchserve())
            url = f"{self.torchserve_url}/ping"
            service.wait_until(lambda: _http("GET", url)[0] == 200, timeout, "answering /ping")
        else:
            service = self._replace("tfserving", self._tfserving())
            url = f"{self.tfserving_rest_url}/v1/models/none"
            service.wait_until(lambda: _http("GET", url)[0] == 404, timeout, "answering")
        return service

    def restart_torchserve(self, timeout: float = 240.0) -> None:
        """Start TorchServe again (after a crash or a kill) and register its start-up versions again."""
        ts = self._replace("torchserve", self._torchserve())
        ts.wait_until(lambda: _http("GET", f"{self.torchserve_url}/ping")[0] == 200, timeout, "answering /ping")
        self._register_torchserve_versions(ts)

    def restart_tfserving(self, timeout: float = 240.0) -> None:
        """Start the TF Serving-compatible server again, with its start-up model config only."""
        self._replace("tfserving", self._tfserving()).wait_until(
            self._tf_available, timeout, "serving every SavedModel version"
        )

    def restart_gateway(self) -> None:
        """Start the stack's gateway again (after a crash or a kill) and wait until it is ready."""
        self._wait_gateway_ready(self._replace("gateway", self._gateway()))

    def restarters(self) -> dict[str, Callable[[], None]]:
        """How to start each of the stack's own services again: what a supervisor calls."""
        restarts = {"torchserve": self.restart_torchserve, "tfserving": self.restart_tfserving}
        if self.start_gateway:
            restarts["gateway"] = self.restart_gateway
        return restarts

    def stop(self) -> None:
        """Stop every service this stack started, gateway first; leaves no process behind."""
        backends = ("tfserving", "torchserve")
        for name in [n for n in self.services if n not in backends] + list(backends):
            service = self.services.get(name)
            if service is not None:
                service.stop()

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def admin_token(workdir: Path) -> tuple[str, Path]:
    """``GATEWAY_ADMIN_TOKEN`` from the environment, else one generated once into an ignored file.

    The ``gateway`` CLI finds the same file, so a newcomer's ``gateway rollback mlp`` just works.
    """
    path = workdir / "admin-token"
    token = os.environ.get("GATEWAY_ADMIN_TOKEN")
    if token:
        return token, path
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip(), path


@dataclass
class RestartPolicy:
    """When to start a dead service again, as Docker's restart policy times it: the first restart
    after ``first`` seconds, each further one after twice the previous delay up to ``longest``,
    and back to ``first`` once a service has stayed up ``reset_after`` seconds."""

    first: float = 1.0
    longest: float = 60.0
    reset_after: float = 10.0


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _exit_reason(service: Service) -> str:
    code = service.proc.returncode if service.proc is not None else None
    if code is None:
        return "did not become ready"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


class Supervisor:
    """Keeps a running stack's services up: each pass of ``check`` restarts the services that have
    died and whose delay has passed. A restart goes through the stack's own restart methods (the
    backends from the start-up files in the store, TorchServe's versions registered again), so a
    restarted service comes back exactly as a first start would bring it up."""

    def __init__(self, stack: LocalStack, policy: RestartPolicy | None = None) -> None:
        self.stack = stack
        self.policy = policy or RestartPolicy()
        self.restarters = stack.restarters()
        self.delay = {name: self.policy.first for name in self.restarters}
        self.due: dict[str, float] = {}
        self.restarts = dict.fromkeys(self.restarters, 0)

    def check(self) -> None:
        for name, restart in self.restarters.items():
            service = self.stack.services.get(name)
            if service is None or service.alive():
                continue
            now = time.monotonic()
            if name not in self.due:
                if now - service.started_at >= self.policy.reset_after:
                    self.delay[name] = self.policy.first  # it had been up a while: not a crash loop
                wait = self.delay[name]
                self.delay[name] = min(wait * 2, self.policy.longest)
                self.due[name] = now + wait
                self.restarts[name] += 1
                _say(f"{name} {_exit_reason(service)}; restart {self.restarts[name]} in {wait:g}s. "
                     f"End of its log ({service.log_path}):\n{service.log_tail(15)}")  # fmt: skip
            elif now >= self.due[name]:
                del self.due[name]
                _say(f"starting {name} again ...")
                try:
                    restart()
                except Exception as exc:  # a supervisor outlives any one failed start: log, retry
                    _say(f"{name} did not come back: {exc}")
                    failed = self.stack.services.get(name)
                    if failed is not None:  # alive but never ready: stop it, so it is retried
                        failed.stop()
                else:
                    _say(f"{name} is back")


def _run(args: argparse.Namespace) -> int:
    ports = Ports.free() if args.free_ports else Ports()
    for name, number in args.port:
        setattr(ports, name, number)
    stack = LocalStack(Path(args.store), Path(args.workdir), ports)
    INTERRUPTS.install()
    print(f"starting TorchServe and the TF Serving-compatible server (logs in {stack.workdir}) ...",
          flush=True)  # fmt: skip
    try:
        stack.start()
        p = stack.ports
        _, token_path = admin_token(stack.workdir)
        token_note = (
            "from GATEWAY_ADMIN_TOKEN"
            if os.environ.get("GATEWAY_ADMIN_TOKEN")
            else f"in {token_path} (the gateway CLI reads it: try `.venv/bin/gateway status`)"
        )
        print(
            f"\nTorchServe         inference http://127.0.0.1:{p.ts_inference}  "
            f"management http://127.0.0.1:{p.ts_management}  metrics http://127.0.0.1:{p.ts_metrics}/metrics\n"
            f"TF Serving (dev)   gRPC 127.0.0.1:{p.tf_grpc}  REST http://127.0.0.1:{p.tf_rest}"
            f"  metrics http://127.0.0.1:{p.tf_rest}/monitoring/prometheus/metrics\n"
            f"Gateway            {stack.gateway_url}  (OpenAPI docs {stack.gateway_url}/docs)"
            f"  gRPC {stack.gateway_grpc_target}\n"
            f"Admin token        {token_note}\n\n"
            "Try:\n"
            f"  curl -s -X POST {stack.gateway_url}/v1/models/mlp:predict \\\n"
            "       -d '{\"instances\": [[0.1, 0.2, 0.3, 0.4]]}'\n\n"
            "A process that dies is started again. Ctrl-C stops everything.",
            flush=True,
        )
        supervisor = Supervisor(stack, RestartPolicy(first=args.restart_delay))
        while True:
            supervisor.check()
            time.sleep(0.5)
    except StartError as exc:
        print(f"start failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("stopped.", flush=True)


def _port(text: str) -> tuple[str, int]:
    name, _, number = text.partition("=")
    if name not in Ports.__dataclass_fields__ or not number.isdigit():
        names = ", ".join(Ports.__dataclass_fields__)
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PORT with NAME one of {names}")
    return name, int(number)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the local stack in the foreground; Ctrl-C stops it")
    run.add_argument("--store", default=str(ROOT / "model_store"))
    run.add_argument("--workdir", default=str(ROOT / ".local"))
    run.add_argument(
        "--free-ports",
        action="store_true",
        help="listen on free ports instead of the documented ones (a second stack, tests)",
    )
    run.add_argument(
        "--port",
        type=_port,
        action="append",
        default=[],
        metavar="NAME=PORT",
        help="one service's port, e.g. gateway=18000 (repeatable; over --free-ports)",
    )
    run.add_argument(
        "--restart-delay",
        type=float,
        default=RestartPolicy.first,
        help="seconds before the first restart of a process that died (doubles up to 60)",
    )
    run.set_defaults(func=_run)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
