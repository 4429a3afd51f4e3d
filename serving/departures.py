"""Requests whose REST client has gone: one thread notices a client that closes its
connection while its request runs, and cancels the request (`Deadline.cancel`), so that the
work stops with the client, as a gRPC cancel stops it."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time

from serving import deadline


class Departures:
    """One thread that notices clients who close their connection while their request runs,
    and cancels it (`Deadline.cancel`), so the work stops with them (as a gRPC cancel does).

    A readable socket whose peek reads nothing has been closed by the client; one that has
    data (a pipelined next request) has not. TLS sockets cannot be peeked and are not watched.
    """

    POLL_SECONDS = 0.1

    def __init__(self):
        self._lock = threading.Lock()
        self._watched: dict[socket.socket, deadline.Deadline] = {}
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watching(self, connection, limit: deadline.Deadline | None):
        """Watch `connection` for the duration of the block."""
        if connection is None or limit is None or isinstance(connection, ssl.SSLSocket):
            yield
            return
        with self._lock:
            self._watched[connection] = limit
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="departures", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._watched.pop(connection, None)

    def _loop(self) -> None:
        while True:
            time.sleep(self.POLL_SECONDS)
            with self._lock:
                watched = dict(self._watched)
            if not watched:
                continue
            try:
                readable, _, _ = select.select(list(watched), [], [], 0)
            except (OSError, ValueError):  # a socket closed meanwhile: check each alone
                readable = list(watched)
            for sock in readable:
                try:
                    gone = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    watched[sock].cancel()


_departures = Departures()


def watching(connection, limit: deadline.Deadline | None):
    """Cancel `limit` if the client closes `connection` during the block."""
    return _departures.watching(connection, limit)
