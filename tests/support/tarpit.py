"""A git host that never answers: a TCP listener on 127.0.0.1 that accepts and stays silent
(used by tests/faults/test_git_host_tarpit.py and the blast-radius matrix)."""

from __future__ import annotations

import socket
import threading


class Tarpit:
    """Listens on 127.0.0.1, accepts every connection and never reads or sends anything. With
    `relay_first`, the first connection is relayed there instead (a git host that goes silent
    after it answered once)."""

    def __init__(self, relay_first: tuple[str, int] | None = None) -> None:
        self.relay_first = relay_first
        self.relayed = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)
        self.thread.start()

    def _hold(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(connection)
            if self.relay_first is not None and not self.relayed:
                self.relayed += 1
                upstream = socket.create_connection(self.relay_first)
                self.held.append(upstream)
                for source, sink in ((connection, upstream), (upstream, connection)):
                    threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def url(self, scheme: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}" if scheme == "http" else f"ssh://git@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        for connection in self.held:
            connection.close()
        self.sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
