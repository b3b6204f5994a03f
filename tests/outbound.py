"""Helpers for the outbound delivery tests: daemons that send and receive, DNS
records that route to them, a scripted SMTP peer, and reading the queue and reports.

The sending daemon's resolver is the test DNS server, which gives the
recipient domains MX records pointing at 127.0.0.1; its outbound port is
the peer's port (TESTING.md "Ports"). Retries are driven by a short
``queue_retry_min`` (1 s), never by sleeping.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading

import pytest

from clients import imap_fetch_all, smtp_send
from conftest import make_daemon

ALICE = "alice@example.test"
BOB_REMOTE = "bob@remote.test"
DEADLINE = 90


def submit(daemon, rcpts: list[str], message: bytes) -> None:
    """Submit as alice (587, STARTTLS, AUTH PLAIN); every RCPT must be accepted."""
    smtp_send(daemon, message, rcpts, kind="submission")


def publish_mx(dns_server, domain: str, host: str | None = None) -> None:
    host = host or f"mx.{domain}"
    dns_server.add(domain, "MX", f"10 {host}.")
    dns_server.add(host, "A", "127.0.0.1")


def sender_daemon(tmp_path, dns_server, outbound_port: int, name: str = "a", **limits: int):
    """The sending daemon: example.test with alice, outbound to ``outbound_port``, 1 s retries;
    ``limits`` are ``[limits]`` settings over those."""
    limits = {"queue_retry_min": 1, "queue_retry_max": 2, "queue_scan_interval": 1, **limits}
    d = make_daemon(tmp_path / name, dns=dns_server, extra_config=(
        "".join(f"{key} = {value}\n" for key, value in limits.items()) +
        f"\n[outbound]\nport = {outbound_port}\n"))
    d.cli("domain", "add", "example.test")
    d.add_user(ALICE, "alice-secret-1")
    return d


def peer_daemon(tmp_path, dns_server, name: str = "b"):
    """A second mailserverd hosting remote.test with bob."""
    d = make_daemon(tmp_path / name, dns=dns_server)
    d.cli("domain", "add", "remote.test")
    d.add_user(BOB_REMOTE, "bob-secret-2")
    return d


def route_back(daemon, to) -> None:
    """Point ``daemon``'s outbound port at ``to``'s MX port (an ``[outbound]`` table
    added to its config), for a peer that sends reports back to the sender."""
    with open(daemon.config_path, "a") as config:
        config.write(f"\n[outbound]\nport = {to.ports['smtp']}\n")


def inbox(daemon, user: str) -> list[bytes]:
    return imap_fetch_all(daemon, user)


def queue_json(daemon) -> list[dict]:
    return json.loads(daemon.cli("queue", "list", "--json").stdout)


# --- a scripted SMTP peer


class ScriptedPeer:
    """An SMTP server on 127.0.0.1 whose RCPT replies come from ``rcpt_replies``
    (one per RCPT, in order over all connections; the last repeats). It
    records every message it accepts. Plain text only (no STARTTLS offered).
    With a ``gate`` (a threading.Event), each session waits for it before its greeting."""

    def __init__(self, rcpt_replies: list[str], port: int | None = None, gate: threading.Event | None = None):
        self.gate = gate
        self.rcpt_replies = list(rcpt_replies)
        self.messages: list[bytes] = []
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", port or 0))
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _rcpt_reply(self) -> str:
        return self.rcpt_replies.pop(0) if len(self.rcpt_replies) > 1 else self.rcpt_replies[0]

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        stream = conn.makefile("rb")
        send = lambda text: conn.sendall(text.encode() + b"\r\n")  # noqa: E731
        try:
            if self.gate is not None:
                self.gate.wait()
            send("220 peer.test ESMTP")
            accepted = 0
            while True:
                line = stream.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    send("250-peer.test\r\n250 8BITMIME")
                elif verb == b"MAIL":
                    accepted = 0
                    send("250 2.1.0 ok")
                elif verb == b"RCPT":
                    reply = self._rcpt_reply()
                    accepted += reply.startswith("2")
                    send(reply)
                elif verb == b"DATA":
                    send("354 go on")
                    body = bytearray()
                    while (data := stream.readline()) not in (b".\r\n", b""):
                        body += data[1:] if data.startswith(b"..") else data
                    if not data:
                        return  # cut off before the final dot: no message (RFC 5321 §4.1.1.4)
                    self.messages.append(bytes(body))
                    send("250 2.0.0 queued")
                elif verb == b"QUIT":
                    send("221 bye")
                    return
                else:
                    send("250 ok")
        except OSError:
            return
        finally:
            conn.close()


def report_parts(raw: bytes):
    """The parsed report: (message, its delivery-status part's recipient blocks)."""
    report = email.message_from_bytes(raw, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    [status] = [part for part in report.walk() if part.get_content_type() == "message/delivery-status"]
    blocks = status.get_payload()  # RFC 3464 §2.1: per-message block, then one per recipient
    return report, blocks


@pytest.fixture
def peers():
    """Make ScriptedPeers (same arguments); all are closed after the test."""
    made: list[ScriptedPeer] = []

    def make(*args, **kwargs) -> ScriptedPeer:
        peer = ScriptedPeer(*args, **kwargs)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()
