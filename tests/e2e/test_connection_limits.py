"""connections_per_ip_max is shared by every listener; a refused client hears why."""

from __future__ import annotations

import socket
import subprocess

import pytest

from conftest import make_daemon, require_program, wait_for

pytestmark = pytest.mark.e2e


def greeting(daemon, kind: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", daemon.ports[kind]), timeout=30)
    return sock, sock.makefile("rb").readline()


def admitted(daemon, kind: str) -> socket.socket | None:
    """A connection the server took in, or None (refused: it does not count)."""
    sock, line = greeting(daemon, kind)
    if line.startswith((b"220", b"* OK", b"+OK")):
        return sock
    sock.close()
    return None


def test_connections_over_the_per_ip_limit_are_refused_with_a_reply(tmp_path):
    daemon = make_daemon(tmp_path / "d", extra_config="connections_per_ip_max = 3")
    daemon.start()
    open_socks = []
    try:
        # the readiness probes' connections may still be closing: poll until admitted
        for kind in ("smtp", "imap", "pop3"):
            open_socks.append(wait_for(lambda: admitted(daemon, kind), what=f"a {kind} slot"))
        for kind, refusal in (("smtp", b"421 4.7.0"), ("imap", b"* BYE [UNAVAILABLE]"),
                              ("pop3", b"-ERR [SYS/TEMP]")):
            sock, line = greeting(daemon, kind)
            assert line.startswith(refusal), line
            assert sock.recv(100) == b""  # closed by the server
            sock.close()
        open_socks.pop().close()  # one slot frees up
        open_socks.append(wait_for(lambda: admitted(daemon, "smtp"), what="the freed slot"))
    finally:
        for sock in open_socks:
            sock.close()
    daemon.stop()


def test_listeners_queue_listen_backlog_connections(tmp_path):
    """Twisted's own default queue is 50: a burst of more connects than that had
    SYNs dropped, and those clients waited seconds for the retry."""
    ss = require_program("ss", "iproute2")
    daemon = make_daemon(tmp_path / "d", extra_config="listen_backlog = 7")
    daemon.start()
    for kind in ("smtp", "imap", "pop3"):
        port = daemon.ports[kind]
        # A listening socket's Send-Q column is its backlog.
        row = subprocess.run([ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                             check=True).stdout.split()
        assert row[:3] == ["LISTEN", "0", "7"], (kind, row)
    daemon.stop()
