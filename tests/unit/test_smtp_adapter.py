"""The Twisted adapter of the SMTP server: StringTransport and Clock, plus one
loopback test where smtplib does a real STARTTLS handshake with ServerTLS."""

from __future__ import annotations

import smtplib
import ssl
from types import SimpleNamespace

import pytest_twisted
import trustme
from twisted.internet import reactor, threads
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from mailserverd.config import ListenerConfig
from mailserverd.delivery.local import DeliveryResult
from mailserverd.limits import Limits
from mailserverd.smtp.adapter import build_factory
from mailserverd.tls import ServerTLS, TLSSettings

HOST = "mx.example.org"


class HeldDelivery:
    """Accepts example.org recipients; deliveries wait in ``pending`` unless ``immediate``."""

    def __init__(self, immediate=False):
        self.immediate = immediate
        self.pending: list[Deferred] = []
        self.raw: list[bytes] = []

    def check_recipient(self, address, remote_allowed=False, size=0):
        return [address] if address.endswith("@example.org") else []

    def deliver(self, sender, recipients, users, raw, client, envelope=None):
        self.raw.append(raw)
        result = DeliveryResult(f"Q{len(self.raw)}", tuple(users), len(raw))
        if self.immediate:
            return succeed(result)
        waiting = Deferred()
        self.pending.append((waiting, result))
        return waiting


class TLSRecordingTransport(StringTransport):
    """A StringTransport that records startTLS calls (it has no TLS of its own)."""

    def __init__(self):
        super().__init__(peerAddress=IPv4Address("TCP", "198.51.100.9", 51000))
        self.tls_creators = []

    def startTLS(self, creator):  # noqa: N802 (Twisted's name)
        self.tls_creators.append(creator)


def make_ctx(delivery, clock, tls=None, **limits):
    config = SimpleNamespace(limits=Limits(**limits), server=SimpleNamespace(hostname=HOST),
                             auth=SimpleNamespace(allow_plaintext=False))
    return SimpleNamespace(config=config, delivery=delivery, clock=clock, authenticator=None, abuse=None,
                           tls=tls or SimpleNamespace(server_creator=lambda: "CREATOR"))


def connect(ctx, kind="smtp"):
    protocol = build_factory(ctx, ListenerConfig(kind=kind, port=2525)).buildProtocol(None)
    transport = TLSRecordingTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def take(transport) -> bytes:
    data = transport.value()
    transport.clear()
    return data


def test_greeting_starttls_and_injection_dropped():
    ctx = make_ctx(HeldDelivery(), Clock())
    protocol, transport = connect(ctx)
    assert take(transport) == f"220 {HOST} ESMTP mailserverd\r\n".encode()
    protocol.dataReceived(b"EHLO c\r\n")
    assert b"250 STARTTLS\r\n" in take(transport)
    protocol.dataReceived(b"STARTTLS\r\nMAIL FROM:<evil@example.net>\r\n")
    assert take(transport) == b"220 2.0.0 Ready to start TLS\r\n"
    assert transport.tls_creators == ["CREATOR"]
    protocol.dataReceived(b"MAIL FROM:<a@example.net>\r\n")
    assert take(transport) == b"503 5.5.1 Send HELO/EHLO first\r\n"


def test_implicit_tls_listener_offers_no_starttls():
    protocol, transport = connect(make_ctx(HeldDelivery(), Clock()), kind="smtps")
    protocol.dataReceived(b"EHLO c\r\n")
    assert b"STARTTLS" not in take(transport)


def test_idle_timeout_closes_with_421():
    clock = Clock()
    protocol, transport = connect(make_ctx(HeldDelivery(), clock, smtp_idle_timeout=300))
    take(transport)
    clock.advance(299)
    protocol.dataReceived(b"NOOP\r\n")  # activity re-arms the timer
    clock.advance(299)
    assert take(transport) == b"250 2.0.0 Ok\r\n"
    assert not transport.disconnecting
    clock.advance(1)
    assert take(transport) == b"421 4.4.2 Idle timeout, closing connection\r\n"
    assert transport.disconnecting
    assert clock.getDelayedCalls() == []


def test_data_timeout_applies_inside_data():
    clock = Clock()
    protocol, transport = connect(make_ctx(HeldDelivery(), clock, smtp_idle_timeout=300,
                                           smtp_data_timeout=600))
    protocol.dataReceived(b"HELO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
    take(transport)
    clock.advance(599)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.value() == b"421 4.4.2 Idle timeout, closing connection\r\n"
    assert transport.disconnecting


def test_waiting_delivery_pauses_reading_and_the_idle_timer():
    clock = Clock()
    delivery = HeldDelivery()
    protocol, transport = connect(make_ctx(delivery, clock, smtp_idle_timeout=300))
    protocol.dataReceived(b"HELO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
    take(transport)
    protocol.dataReceived(b"hello\r\n.\r\n")
    assert transport.producerState == "producing"  # a client waiting for its reply costs nothing
    assert clock.getDelayedCalls() == []  # the wait is ours: no idle timeout meanwhile
    protocol.dataReceived(b"NOOP\r\n")  # pipelined meanwhile: stop reading until the reply
    assert transport.producerState == "paused"
    assert take(transport) == b""
    waiting, result = delivery.pending.pop()
    waiting.callback(result)
    assert take(transport) == b"250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok\r\n"
    assert transport.producerState == "producing"
    assert len(clock.getDelayedCalls()) == 1


def test_connection_lost_while_waiting_sends_nothing_and_logs_one_line():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        delivery = HeldDelivery()
        protocol, transport = connect(make_ctx(delivery, Clock()))
        protocol.dataReceived(b"HELO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<u@example.org>\r\n"
                              b"DATA\r\nx\r\n.\r\n")
        take(transport)
        protocol.connectionLost(None)
        waiting, result = delivery.pending.pop()
        waiting.callback(result)
        assert take(transport) == b""
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [event for event in events if event.get("log_format", "").startswith("connection ")]
    assert len(lines) == 1
    assert (lines[0]["kind"], lines[0]["peer"], lines[0]["tls"]) == ("smtp", "198.51.100.9", "no")


@pytest_twisted.inlineCallbacks
def test_loopback_starttls_with_smtplib(tmp_path):
    """A real client over a real socket: STARTTLS, a message, and the wire
    result after the handshake (the e2e tests do this against the daemon)."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    delivery = HeldDelivery(immediate=True)
    ctx = make_ctx(delivery, reactor, tls=ServerTLS(TLSSettings(cert=str(cert_path), key=str(key_path))))
    port = reactor.listenTCP(0, build_factory(ctx, ListenerConfig(kind="smtp", port=25)),
                             interface="127.0.0.1")
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    def talk():
        with smtplib.SMTP("127.0.0.1", port.getHost().port, local_hostname="client.test",
                          timeout=20) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("starttls")
            smtp.starttls(context=client_context)
            smtp.ehlo()
            assert not smtp.has_extn("starttls")
            refused = smtp.sendmail("a@example.net", ["u@example.org"],
                                    b"Subject: hi\r\n\r\n.dot\r\nbody\r\n")
            assert refused == {}
            return smtp.noop()

    try:
        code, _ = yield threads.deferToThread(talk)
    finally:
        yield port.stopListening()
    assert code == 250
    assert delivery.raw == [b"Subject: hi\r\n\r\n.dot\r\nbody\r\n"]
