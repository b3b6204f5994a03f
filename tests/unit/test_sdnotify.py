"""sd_notify: what a service manager listening on $NOTIFY_SOCKET receives."""

from __future__ import annotations

import os
import socket
import time

import pytest
from twisted.internet.task import Clock

from mailserverd.sdnotify import Notifier


@pytest.fixture
def manager(tmp_path):
    """A datagram socket standing in for systemd's notification socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(10)
    yield path, sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_reloading_stopping(manager):
    path, sock = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("serving 7 listeners")
    assert received(sock) == ["READY=1", "STATUS=serving 7 listeners"]
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    reloading, monotonic = received(sock)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert reloading == "RELOADING=1"
    assert monotonic.startswith("MONOTONIC_USEC=")
    assert before <= int(monotonic.split("=")[1]) <= after  # CLOCK_MONOTONIC, in µs
    assert notifier.stopping()
    assert received(sock) == ["STOPPING=1"]


def test_abstract_namespace_socket():
    name = f"mailserverd-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(10)
    with sock:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert received(sock) == ["READY=1"]


def test_without_notify_socket_nothing_is_sent():
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.start_watchdog(Clock()) is None


def test_unreachable_socket_is_not_fatal(tmp_path):
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready()


def test_watchdog_every_half_interval(manager):
    path, sock = manager
    sock.setblocking(False)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000",
                         "WATCHDOG_PID": str(os.getpid())})
    clock = Clock()
    call = notifier.start_watchdog(clock)
    assert call is not None
    assert received(sock) == ["WATCHDOG=1"]  # at once
    clock.advance(1.9)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)
    clock.advance(0.1)  # 2 s: half of WATCHDOG_USEC
    assert received(sock) == ["WATCHDOG=1"]
    call.stop()


def test_watchdog_for_another_process_is_ignored(manager):
    path, _ = manager
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000",
                         "WATCHDOG_PID": str(os.getpid() + 1)})
    assert notifier.start_watchdog(Clock()) is None
