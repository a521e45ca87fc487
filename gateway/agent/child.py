"""The agent as a container's entry wrapper: ``gateway agent ... -- <backend command...>``.

The backend runs as the agent's child, in a process group of its own: SIGTERM and SIGINT that the
agent receives go to that whole group once the agent has deregistered the replica (a drain,
gateway/agent/run.py; ``torchserve --foreground`` is a Python launcher whose Java server and
handler workers are further processes of the group), the agent stops when the child exits and
exits with the child's code (128 + N when a signal N ended it), and whatever is left of the group
afterwards is terminated, then killed: nothing outlives the agent. Zombies of processes
that leave the group are reaped by the container's init (compose's ``init: true``).

And where the gateway reaches a replica when that cannot be written down in advance (``docker
compose --scale``: every container has its own address): ``{host}`` and ``{ip}`` in the agent's
``--inference-url`` and ``--replica-id`` become the host name and the address it resolves to.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Sequence

log = logging.getLogger("gateway.agent")

# After the child exits, what is left of its group gets SIGTERM, and SIGKILL this long after.
LEFTOVER_GRACE_SECONDS = 10.0
FORWARDED = (signal.SIGTERM, signal.SIGINT)


def host_name() -> str:
    """This replica's host name: ``$POD_NAME`` in Kubernetes, else the machine's (in compose, the
    container's: its short id unless the service sets ``hostname``)."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def expand(template: str, host: str) -> str:
    """``template`` with ``{host}`` replaced by ``host`` and ``{ip}`` by the IPv4 address ``host``
    resolves to (a container resolves its own name to its address on its network)."""
    if "{ip}" in template:
        template = template.replace("{ip}", socket.gethostbyname(host))
    return template.replace("{host}", host)


def exit_code(returncode: int) -> int:
    """A shell's exit status for a child's ``returncode`` (negative: ended by that signal)."""
    return 128 - returncode if returncode < 0 else returncode


class Child:
    """The backend command, started in a process group of its own."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(*self.argv, start_new_session=True)
        log.info("started the backend (pid %d): %s", self.process.pid, " ".join(self.argv))

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group (nothing if it is gone)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        else:
            log.info("sent %s to the backend's processes", signal.Signals(sig).name)

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def stop(self, sig: int | None = None, grace_seconds: float = LEFTOVER_GRACE_SECONDS) -> int:
        """Stop the child with ``sig`` (default SIGTERM; if it still runs; SIGKILL after
        ``grace_seconds``) and terminate whatever remains of its group; its return code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.signal(sig or signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), grace_seconds)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            code = await self.process.wait()
        await self._clean_group(grace_seconds)
        return code

    async def _clean_group(self, grace_seconds: float) -> None:
        """The group outlived its leader (e.g. a server the launcher started): TERM, then KILL."""
        assert self.process is not None
        pgid = self.process.pid
        if not _group_alive(pgid):
            return
        log.warning("backend processes outlived the backend's command; terminating them")
        self.signal(signal.SIGTERM)
        for _ in range(max(1, int(grace_seconds / 0.1))):
            if not _group_alive(pgid):
                return
            await asyncio.sleep(0.1)
        if _group_alive(pgid):
            self.signal(signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
