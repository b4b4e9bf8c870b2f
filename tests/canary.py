"""A loopback listener that records every connection made to it: the proof that the server
under test fetched nothing. It answers each request with a 404 so a fetching client never
hangs.

    with Canary() as canary:
        ...  # requests that must not make the server fetch canary.url("x")
    assert canary.connections == []
"""

from __future__ import annotations

import socket
import threading


class Canary:
    """Listens on 127.0.0.1:<free port> in a thread; ``connections`` lists what it got."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self._socket.settimeout(0.1)
        self.port = self._socket.getsockname()[1]
        self.connections: list[bytes] = []  # the first bytes sent over each connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"canary:{self.port}",
                                        daemon=True)

    def url(self, path: str = "") -> str:
        """``http://127.0.0.1:<port>/<path>``."""
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                try:
                    self.connections.append(connection.recv(4096))
                    connection.sendall(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    self.connections.append(b"")

    def __enter__(self) -> Canary:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()
