"""Which sockets have something to read, for any file descriptor number.

``select.select`` refuses descriptors of 1024 and up (FD_SETSIZE), and the whole
suite in one process -- or a test that opens a thousand connections -- goes past
that; the selectors module's epoll has no such bound.
"""

from __future__ import annotations

import selectors
import socket


def readable(sockets: list[socket.socket], timeout: float) -> list[socket.socket]:
    """The sockets of *sockets* that are readable (data or end of file) within *timeout* s."""
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        return [key.fileobj for key, _events in selector.select(timeout)]
