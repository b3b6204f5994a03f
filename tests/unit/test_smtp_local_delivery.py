"""LocalDelivery against the real LMDB store (in tmp_path), and one SMTP session
driven through it: the 250 comes only once the message is in the INBOX."""

from __future__ import annotations

import re

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from mailserverd.delivery.local import ClientInfo, LocalDelivery
from mailserverd.errors import MailError
from mailserverd.limits import MIB, Limits
from mailserverd.metrics import Metrics
from mailserverd.smtp.session import ListenerPolicy, Peer, Send, SMTPSession, Wait
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.types import Credentials, ScramSecrets

LIMITS = Limits(store_map_size=32 * MIB)
CREDS = Credentials(bcrypt_hash=b"$2b$04$hash", scram_sha256=ScramSecrets(b"salt", 4096, b"K" * 32, b"S" * 32))
HOST = "mx.example.org"
CLIENT = ClientInfo(helo="client.example.net", ip="192.0.2.7", protocol="ESMTP")


@pytest.fixture
def store(tmp_path):
    opened = LMDBStore.open(str(tmp_path / "data"), 2, LIMITS)
    opened.start()
    pytest_twisted.blockon(opened.add_domain("example.org"))
    pytest_twisted.blockon(opened.add_user("alice@example.org", CREDS))
    pytest_twisted.blockon(opened.add_user("bob@example.org", CREDS))
    pytest_twisted.blockon(opened.add_user("tiny@example.org", CREDS, quota=10))
    pytest_twisted.blockon(opened.add_alias("team@example.org", ["alice@example.org", "bob@example.org",
                                                                 "far@elsewhere.example"]))
    yield opened
    pytest_twisted.blockon(opened.stop())


def inbox(store, user) -> list[bytes]:
    box = store.get_mailbox(user, "INBOX")
    return [store.read_message(user, m.blob_id) for m in store.list_messages(user, box.mailbox_id)]


def counted(metrics: Metrics, name: str, **labels: str) -> float:
    """A counter's value in ``metrics`` (0 for a series never counted)."""
    return metrics.registry.get_sample_value(name, labels) or 0


def test_check_recipient(store):
    metrics = Metrics()
    delivery = LocalDelivery(store, HOST, Clock(), metrics=metrics)
    assert delivery.check_recipient("Alice@Example.ORG") == ["alice@example.org"]
    assert delivery.check_recipient("team@example.org") == ["alice@example.org", "bob@example.org"]
    assert delivery.check_recipient("nobody@example.org") == []
    with pytest.raises(MailError) as refused:
        delivery.check_recipient("victim@elsewhere.example")
    assert (refused.value.code, refused.value.enhanced) == ("550", "5.7.1")
    with pytest.raises(MailError):
        delivery.check_recipient("tiny@example.org", size=100)
    rejected = {reason: counted(metrics, "mailserverd_recipients_rejected_total", reason=reason)
                for reason in ("unknown_user", "relay_denied", "mailbox_full", "error")}
    assert rejected == {"unknown_user": 1, "relay_denied": 1, "mailbox_full": 1, "error": 0}


def test_received_header():
    clock = Clock()
    clock.advance(1764270000)  # 2025-11-27 19:00:00 UTC
    delivery = LocalDelivery(None, HOST, clock)
    one = delivery.received_header(ClientInfo("c.example(x)", "2001:db8::1", "", "ESMTPS"), "ABC", ["a@example.org"])
    assert one == (b"Received: from c.example_x_ (unknown [IPv6:2001:db8::1])\r\n"
                   b"\tby mx.example.org (mailserverd) with ESMTPS id ABC\r\n"
                   b"\tfor <a@example.org>; Thu, 27 Nov 2025 19:00:00 +0000\r\n")
    two = delivery.received_header(CLIENT, "ABC", ["a@example.org", "b@example.org"])
    assert b"for <" not in two
    assert two.endswith(b"with ESMTP id ABC;\r\n\tThu, 27 Nov 2025 19:00:00 +0000\r\n")


@pytest_twisted.ensureDeferred
async def test_deliver_stores_message_with_received_and_logs_one_line(store):
    events = []
    globalLogPublisher.addObserver(events.append)
    metrics = Metrics()
    try:
        delivery = LocalDelivery(store, HOST, Clock(), metrics=metrics)
        result = await delivery.deliver("s@example.net", ["team@example.org"],
                                        ["alice@example.org", "bob@example.org"],
                                        b"Subject: hi\r\n\r\nbody\r\n", CLIENT)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert re.fullmatch(r"[0-9A-F]{12}", result.queue_id)
    assert result.users == ("alice@example.org", "bob@example.org")
    for user in result.users:
        [stored] = inbox(store, user)
        assert stored.startswith(b"Received: from client.example.net (unknown [192.0.2.7])\r\n")
        assert f"id {result.queue_id}\r\n\tfor <team@example.org>; ".encode() in stored
        assert stored.endswith(b"\r\nSubject: hi\r\n\r\nbody\r\n")
        assert len(stored) == result.size
    lines = [e for e in events if e.get("log_format", "").startswith("delivery ")]
    assert len(lines) == 1
    assert (lines[0]["queue_id"], lines[0]["result"], lines[0]["sender"]) == (result.queue_id, "ok", "s@example.net")
    assert counted(metrics, "mailserverd_messages_received_total", origin="mx") == 1
    assert counted(metrics, "mailserverd_messages_delivered_total") == 2


@pytest_twisted.ensureDeferred
async def test_over_quota_for_all_is_452_and_mixed_is_451(store):
    metrics = Metrics()
    delivery = LocalDelivery(store, HOST, Clock(), metrics=metrics)
    with pytest.raises(MailError) as full:
        await delivery.deliver("", ["tiny@example.org"], ["tiny@example.org"], b"x" * 1000 + b"\r\n", CLIENT)
    assert (full.value.code, full.value.enhanced) == ("452", "4.2.2")
    with pytest.raises(MailError) as mixed:
        await delivery.deliver("", ["tiny@example.org", "alice@example.org"],
                               ["tiny@example.org", "alice@example.org"], b"y" * 1000 + b"\r\n", CLIENT)
    assert (mixed.value.code, mixed.value.enhanced) == ("451", "4.3.0")
    for reason in ("mailbox_full", "error"):
        assert counted(metrics, "mailserverd_messages_rejected_total", reason=reason) == 1
    assert counted(metrics, "mailserverd_messages_received_total", origin="mx") == 0
    assert counted(metrics, "mailserverd_messages_delivered_total") == 1  # alice's copy


@pytest_twisted.ensureDeferred
async def test_store_not_running_is_451(tmp_path):
    stopped = LMDBStore.open(str(tmp_path / "other"), 1, LIMITS)
    stopped.start()
    await stopped.add_domain("example.org")
    await stopped.add_user("alice@example.org", CREDS)
    await stopped.stop()
    delivery = LocalDelivery(stopped, HOST, Clock())
    with pytest.raises(MailError) as failed:
        await delivery.deliver("", ["alice@example.org"], ["alice@example.org"], b"x\r\n", CLIENT)
    assert failed.value.code == "451"


@pytest_twisted.ensureDeferred
async def test_smtp_session_through_real_delivery(store):
    session = SMTPSession(ListenerPolicy("smtp"), LocalDelivery(store, HOST, Clock()), LIMITS, HOST,
                          Peer("192.0.2.7"))
    sent = bytearray()
    waits = []

    def perform(actions):
        for action in actions:
            if isinstance(action, Send):
                sent.extend(action.data)
            elif isinstance(action, Wait):
                waits.append(action.deferred.addCallback(perform))

    perform(session.greeting())
    perform(session.data_received(b"EHLO c.example\r\nMAIL FROM:<s@example.net>\r\n"
                                  b"RCPT TO:<Alice@example.org>\r\nRCPT TO:<far@elsewhere.example>\r\n"
                                  b"DATA\r\nSubject: x\r\n\r\n..hi\r\n.\r\nQUIT\r\n"))
    assert b"550 5.7.1 Relay access denied\r\n" in sent
    assert not sent.endswith(b"221 2.0.0 Bye\r\n")  # the store has not committed yet
    await waits[0]
    assert re.search(rb"250 2\.0\.0 Ok: queued as [0-9A-F]{12}\r\n221 2\.0\.0 Bye\r\n$", bytes(sent))
    [stored] = inbox(store, "alice@example.org")
    assert stored.endswith(b"\r\nSubject: x\r\n\r\n.hi\r\n")
    assert b"with ESMTP id " in stored
