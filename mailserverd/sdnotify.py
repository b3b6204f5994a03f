"""The systemd notification protocol (sd_notify), written out: one datagram per state.

systemd gives a ``Type=notify`` service the path of a datagram socket in
``$NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract namespace) and
reads newline-separated ``KEY=VALUE`` assignments from it
(sd_notify(3)): ``READY=1`` once the service is up, ``RELOADING=1`` with
``MONOTONIC_USEC`` while it reloads, ``STOPPING=1`` when it begins to stop,
``WATCHDOG=1`` at least every ``$WATCHDOG_USEC`` microseconds when
``WatchdogSec=`` is set. Without ``$NOTIFY_SOCKET`` every call does nothing,
so the same code runs under systemd and from a terminal.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Mapping

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger(namespace="mailserverd.systemd")


def _address(path: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as a socket address: ``@name`` is the abstract ``\\0name``."""
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


class Notifier:
    """Sends state changes to the service manager named by ``environ``.

    ``environ`` defaults to ``os.environ`` and is read once, here. Each
    method sends one datagram and returns whether it was sent; a failure to
    send is logged (systemd may be restarting) and never raised, since the
    mail service must not stop because its supervisor went away.
    """

    def __init__(self, environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        self.path = environ.get("NOTIFY_SOCKET", "")
        self.watchdog_usec = _watchdog_usec(environ)

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens (``$NOTIFY_SOCKET`` was set)."""
        return bool(self.path)

    def send(self, *assignments: str) -> bool:
        """Send ``assignments`` (``"READY=1"``, ...) as one message."""
        if not self.path:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, _address(self.path))
        except OSError as error:
            log.warn("sd-notify-failed socket={path} error={error}", path=self.path, error=error)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Every listener is up and the store is open (sd_notify(3) ``READY=1``)."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """A reload began; ``READY=1`` ends it. systemd wants the CLOCK_MONOTONIC
        time with it (sd_notify(3), ``RELOADING=1``)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """Shutdown began (``STOPPING=1``)."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """The reactor is alive (``WATCHDOG=1``)."""
        return self.send("WATCHDOG=1")

    def start_watchdog(self, clock: Any) -> LoopingCall | None:
        """Send ``WATCHDOG=1`` from ``clock`` (the reactor) every WATCHDOG_USEC/2.

        Returns the running LoopingCall (stop it at shutdown), or None when no
        watchdog is asked for. The pings come from the reactor thread on
        purpose: a reactor that is stuck stops sending them, and systemd
        restarts the service.
        """
        if not (self.enabled and self.watchdog_usec):
            return None
        call = LoopingCall(self.watchdog)
        call.clock = clock
        # sd_watchdog_enabled(3) advises pinging at half the timeout.
        call.start(self.watchdog_usec / 2 / 1_000_000, now=True)
        return call


def _watchdog_usec(environ: Mapping[str, str]) -> int:
    """``$WATCHDOG_USEC`` when it is meant for this process (``$WATCHDOG_PID``), else 0."""
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return 0
    value = environ.get("WATCHDOG_USEC", "")
    return int(value) if value.isdigit() else 0
