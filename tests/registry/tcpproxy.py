"""A tiny TCP forwarder that a test can cut and restore, to play a database outage without
touching the shared server."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class TcpProxy:
    """Forwards 127.0.0.1:``port`` (a free port) to ``target``.

    ``cut()`` closes every forwarded connection and makes new ones fail at once (accepted, then
    closed), as a server that went away would; ``restore()`` forwards again. The listening
    socket stays bound all along, so the port cannot be taken meanwhile.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Drop every forwarded connection; refuse new ones until ``restore``."""
        self._up.clear()
        self._drop_all()

    def restore(self) -> None:
        """Forward new connections again."""
        self._up.set()

    def close(self) -> None:
        """Stop the proxy and close everything."""
        self._closing.set()
        self._up.clear()
        self._drop_all()
        self._thread.join(2)
        self._listener.close()

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=3)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        # One thread per connection pair, forwarding both ways until either side closes.
        peer = {a: b, b: a}
        with selectors.DefaultSelector() as sel:
            for sock in (a, b):
                sock.setblocking(True)
                sel.register(sock, selectors.EVENT_READ)
            try:
                while True:
                    for key, _ in sel.select(timeout=0.5):
                        src: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = src.recv(65536)
                        if not data:
                            return
                        peer[src].sendall(data)
                    if not self._up.is_set() and a.fileno() == -1:
                        return
            except (OSError, ValueError):
                return
            finally:
                for sock in (a, b):
                    with self._lock:
                        self._open.discard(sock)
                    with contextlib.suppress(OSError):
                        sock.close()
