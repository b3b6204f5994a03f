"""Listening sockets: bound here, or taken from systemd socket activation.

With ``[server] socket_activation`` off, each ``[[listener]]`` is bound on
its address and port (as root, ports below 1024 too). With it on, systemd
passes the sockets of ``mailserverd.socket`` (``$LISTEN_FDS``, sd_listen_fds(3))
and each listener takes the one bound to its own address and port, as
Dovecot matches its inherited sockets. Matching by address rather than by
``FileDescriptorName=`` lets one socket unit serve every listener: systemd
gives all the sockets of a unit the same name.

Either way the ports come back with accepting paused: :func:`resume` starts
it, once privileges are dropped and the services are running, so that no
client byte is read before then.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any, Mapping, Sequence

from twisted.internet.error import CannotListenError
from twisted.python.systemd import ListenFDs

from mailserverd.config import ListenerConfig


class ListenerError(Exception):
    """A listener cannot listen; the message names it and why."""


def passed_sockets(environ: Mapping[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed to this process, in order; ``[]`` when none.

    Reads ``$LISTEN_PID``/``$LISTEN_FDS`` (and removes them from ``environ``,
    ``os.environ`` by default, so child processes do not take them too).
    Call once per process.
    """
    environ = os.environ if environ is None else environ
    descriptors = ListenFDs.fromEnvironment(environ).inheritedDescriptors()
    return [socket.socket(fileno=fd) for fd in descriptors]


def _bound(sock: socket.socket) -> str:
    """``address:port`` (``[v6]:port``) a socket is bound to, normalised, or a description."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return f"a socket of family {sock.family.name}"
    host, port = sock.getsockname()[:2]
    host = str(ipaddress.ip_address(host))
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _wanted(listener: ListenerConfig) -> str:
    host = listener.address
    return f"[{host}]:{listener.port}" if ":" in host else f"{host}:{listener.port}"


def match_sockets(listeners: Sequence[ListenerConfig],
                  sockets: Sequence[socket.socket]) -> list[socket.socket]:
    """For each listener, the passed listening TCP socket bound to its address and port.

    Raises ListenerError naming every listener without a socket and every
    socket no listener takes (each is a mistake in the config or the
    socket unit); closes nothing.
    """
    by_address: dict[str, socket.socket] = {}
    problems: list[str] = []
    for sock in sockets:
        where = _bound(sock)
        listening = sock.type == socket.SOCK_STREAM and sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if not listening or where in by_address:
            problems.append(f"passed socket {where} is not a distinct listening TCP socket")
        by_address[where] = sock
    chosen: list[socket.socket] = []
    for number, listener in enumerate(listeners, start=1):
        sock = by_address.pop(_wanted(listener), None)
        if sock is None:
            problems.append(f"[[listener]] #{number} ({listener.kind} {_wanted(listener)}): "
                            "systemd passed no socket bound there")
        else:
            chosen.append(sock)
    problems += [f"passed socket {where}: no [[listener]] has this address and port"
                 for where in by_address]
    if problems:
        raise ListenerError("; ".join(problems))
    return chosen


def listen(reactor: Any, listener: ListenerConfig, factory: Any,
           sock: socket.socket | None = None, backlog: int = 511) -> Any:
    """Listen for ``listener`` with ``factory``: bind with ``backlog``, or adopt
    ``sock`` (then closed; its backlog is what systemd's Backlog= made it).

    Returns the listening port with accepting paused (see :func:`resume`).
    Raises ListenerError when the address cannot be bound.
    """
    if sock is None:
        try:
            port = reactor.listenTCP(listener.port, factory, backlog=backlog, interface=listener.address)
        except CannotListenError as error:
            raise ListenerError(f"{listener.kind} listener on {_wanted(listener)}: "
                                f"{error.socketError}") from None
    else:
        # Twisted adopts a duplicate, which must be non-blocking and close-on-exec already.
        sock.setblocking(False)
        sock.set_inheritable(False)
        port = reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
        sock.close()
    port.stopReading()
    return port


def resume(ports: Sequence[Any]) -> None:
    """Start accepting on ports :func:`listen` returned."""
    for port in ports:
        port.startReading()
