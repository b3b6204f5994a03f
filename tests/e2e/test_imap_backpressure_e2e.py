"""A client that does not read its FETCH answer: the daemon waits, it does not buffer it all.

Bad input is normal input (the IMAP issue's list: "a client that never reads
its responses (back-pressure, not unbounded buffering)").
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
from pathlib import Path

import pytest

from conftest import wait_for

pytestmark = pytest.mark.e2e

MESSAGES = 40
BODY_LINES = 6_000  # ~500 KB a message, ~20 MB of answer


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def big_message(number: int) -> bytes:
    body = b"".join(b"line %06d of message %03d: the quick brown fox jumps over the dog\r\n"
                    % (line, number) for line in range(BODY_LINES))
    return b"Subject: big %d\r\nMessage-ID: <%d@remote.test>\r\n\r\n" % (number, number) + body


def test_fetch_to_a_client_that_does_not_read_is_held_back(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=60) as client:
        client.ehlo("mta.remote.test")
        for number in range(MESSAGES):
            assert client.sendmail("x@remote.test", ["alice@example.test"], big_message(number)) == {}
    answer_size = sum(len(big_message(number)) for number in range(MESSAGES))
    sock = socket.create_connection(("127.0.0.1", daemon.ports["imaps"]), timeout=60)
    slow = daemon.ssl_context().wrap_socket(sock, server_hostname="localhost")
    slow.recv(4096)
    password = daemon.users["alice@example.test"]
    slow.sendall(b'a LOGIN alice@example.test "%s"\r\nb SELECT INBOX\r\n' % password.encode())
    seen = b""
    while b"b OK" not in seen:
        seen += slow.recv(65536)
    before = rss_bytes(daemon.proc.pid)
    slow.sendall(b"c FETCH 1:* (BODY.PEEK[])\r\n")  # ... and read nothing for now
    # Meanwhile another client is served, many round trips: the daemon is not stuck.
    other = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                              timeout=60)
    other.login("alice@example.test", password)
    other.select("INBOX", readonly=True)
    for _ in range(20):
        assert other.noop()[0] == "OK"
    other.logout()
    grown = rss_bytes(daemon.proc.pid) - before
    assert grown < answer_size // 2, (grown, answer_size)
    # Now read it all: every message arrives, then the tagged OK.
    received = bytearray()

    def read_more() -> bool:
        received.extend(slow.recv(1 << 20))
        return received.endswith(b"c OK Fetch completed\r\n")

    wait_for(read_more, timeout=120, interval=0, what="the whole FETCH answer")
    assert received.count(b" FETCH (BODY[] {") == MESSAGES
    assert len(received) > answer_size
    slow.close()


def test_logout_closes_the_connection(daemon):
    """RFC 9051 §6.1.3: after LOGOUT's OK the server closes (clients such as mbsync wait for it)."""
    sock = socket.create_connection(("127.0.0.1", daemon.ports["imaps"]), timeout=30)
    tls = daemon.ssl_context().wrap_socket(sock, server_hostname="localhost")
    received = bytearray(tls.recv(4096))
    tls.sendall(b"a LOGOUT\r\n")

    def closed() -> bool:
        data = tls.recv(4096)
        received.extend(data)
        return not data

    wait_for(closed, timeout=30, interval=0, what="the server to close after LOGOUT")
    assert received.endswith(b"a OK Logout completed\r\n")
    tls.close()
