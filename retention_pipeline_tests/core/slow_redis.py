"""A Redis that answers slowly: a TCP proxy in front of the test's redis-server that holds every reply."""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class SlowProxy:
    """Forwards to `target_port`, each reply `delay` seconds late (requests go through at once)."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _accept(self) -> None:
        while True:
            try:
                client, _address = self._listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.delay), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while data := source.recv(65536):
                time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


@contextmanager
def slow_redis(target_port: int, delay: float) -> Iterator[SlowProxy]:
    """A SlowProxy for the duration of a `with` block."""
    proxy = SlowProxy(target_port, delay)
    try:
        yield proxy
    finally:
        proxy.close()
